"""The storage object: one engine, its repositories, units of work and the task queue."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import Any, TypeVar, cast

from sqlalchemy import URL, Engine
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

from asynctaskmanager.domain.repositories import (
    TaskConfigRepository,
    TaskLogRepository,
    TaskRepository,
    WorkerRepository,
)
from asynctaskmanager.errors import AsyncTaskManagerError, StorageError, TransientStorageError
from asynctaskmanager.infrastructure import migrations
from asynctaskmanager.infrastructure.dialects import DialectProfile
from asynctaskmanager.infrastructure.engine import MySQLConfig, build_engine, is_memory, resolve_url
from asynctaskmanager.infrastructure.queue import QueueSettings, TaskQueue
from asynctaskmanager.infrastructure.unit_of_work import SingleWriterGuard, UnitOfWork

T = TypeVar("T")


class TransactionRetry:
    """Deadlocks, lock-wait timeouts and dropped connections retried at the transaction edge.

    Full jitter on an exponential ceiling, so that colliding workers spread out.
    """

    def __init__(
        self, attempts: int = 6, base_delay: float = 0.005, max_delay: float = 0.5
    ) -> None:
        self.attempts = attempts
        self.base_delay = base_delay
        self.max_delay = max_delay

    def pause(self, attempt: int) -> None:
        time.sleep(random.uniform(0, min(self.max_delay, self.base_delay * 2**attempt)))


class Storage:
    """Open with :func:`open_storage`. Close it (or use it as a context manager) to release
    every connection.

    ``tasks``, ``task_configs``, ``task_logs`` and ``workers`` run each call in its own
    transaction; :meth:`unit_of_work` shares one transaction across several calls.
    """

    def __init__(
        self,
        engine: Engine,
        profile: DialectProfile,
        *,
        queue_settings: QueueSettings | None = None,
        retry: TransactionRetry | None = None,
    ) -> None:
        self.engine = engine
        self.profile = profile
        self.retry = retry or TransactionRetry()
        self._memory = is_memory(engine.url)
        self._guard = SingleWriterGuard(serialise=self._memory) if profile.single_writer else None
        self.tasks = cast(TaskRepository, _AutoCommit(self, "tasks"))
        self.task_configs = cast(TaskConfigRepository, _AutoCommit(self, "task_configs"))
        self.task_logs = cast(TaskLogRepository, _AutoCommit(self, "task_logs"))
        self.workers = cast(WorkerRepository, _AutoCommit(self, "workers"))
        self.queue = TaskQueue(self, queue_settings or QueueSettings())

    @property
    def backend(self) -> str:
        return "memory" if self._memory else self.profile.name

    def unit_of_work(self, *, read_only: bool = False) -> UnitOfWork:
        return UnitOfWork(self.engine, self.profile, self._guard, read_only=read_only)

    def run(self, work: Callable[[UnitOfWork], T], *, read_only: bool = False) -> T:
        """Run ``work`` in one transaction and commit it, retrying transient failures.

        ``work`` may run more than once, so it must not have effects outside the database.
        """
        attempt = 0
        while True:
            try:
                with self.unit_of_work(read_only=read_only) as uow:
                    result = work(uow)
                    uow.commit()
                    return result
            except TransientStorageError as error:
                attempt += 1
                waited_for_pool = isinstance(error.__cause__, PoolTimeoutError)
                if error.outcome_unknown or waited_for_pool or attempt >= self.retry.attempts:
                    raise
                self.retry.pause(attempt)

    def upgrade(self, revision: str = "head") -> None:
        """Bring the schema to ``revision`` with the bundled Alembic migrations."""
        if self._guard is None:
            migrations.upgrade(self.engine, revision)
            return
        with self._guard:
            migrations.upgrade(self.engine, revision)

    def schema_revision(self) -> str | None:
        return migrations.current_revision(self.engine)

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> Storage:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class _AutoCommit:
    """A repository whose every call is its own retried transaction (read-only for reads)."""

    _READS = frozenset(
        {"get", "find", "list", "list_enabled", "count", "list_for_task", "count_for_task"}
    )

    def __init__(self, storage: Storage, name: str) -> None:
        self._storage = storage
        self._name = name

    def __getattr__(self, method: str) -> Callable[..., Any]:
        read_only = method in self._READS

        def call(*args: Any, **kwargs: Any) -> Any:
            return self._storage.run(
                lambda uow: getattr(getattr(uow, self._name), method)(*args, **kwargs),
                read_only=read_only,
            )

        call.__name__ = method
        return call


def open_storage(
    target: str | URL | MySQLConfig | None = None,
    *,
    upgrade: bool = False,
    queue_settings: QueueSettings | None = None,
    retry: TransactionRetry | None = None,
    check_schema: bool = True,
) -> Storage:
    """Open a storage from a URL, a :class:`MySQLConfig`, or ``"memory"``.

    With no target: ``ASYNCTASK_DATABASE_URL``, else the embedded ``sqlite:///asynctask.db``.
    The memory backend always starts from an empty, fully migrated schema. Other backends
    are migrated with ``alembic upgrade head``, ``asynctaskmanager upgrade``, or
    ``upgrade=True`` here. A schema behind the library's raises SchemaOutOfDateError, unless
    ``check_schema=False`` or ``ASYNCTASK_SKIP_SCHEMA_CHECK=1`` (rolling upgrades).
    """
    if isinstance(target, MySQLConfig):
        engine, profile = build_engine(target.url, **target.pool_options())
    else:
        engine, profile = build_engine(resolve_url(target))
    storage = Storage(engine, profile, queue_settings=queue_settings, retry=retry)
    try:
        migrations.check_on_open(engine, upgrading=upgrade, enabled=check_schema)
    except AsyncTaskManagerError:
        storage.close()
        raise
    if upgrade or storage.backend == "memory":
        try:
            storage.upgrade()
        except Exception as error:
            storage.close()
            if isinstance(error, StorageError):
                raise
            raise StorageError(f"migrating the database failed: {error}") from error
    return storage
