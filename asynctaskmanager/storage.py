"""The storage object: it composes one database's transaction runner, repositories, units
of work and task queue, and does nothing of its own."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Generic, TypeVar, cast

from sqlalchemy import Engine

from asynctaskmanager.domain.repositories import (
    TaskConfigRepository,
    TaskLogRepository,
    TaskRepository,
    WorkerRepository,
)
from asynctaskmanager.errors import AsyncTaskManagerError, StorageError
from asynctaskmanager.infrastructure import migrations
from asynctaskmanager.infrastructure.dialects import DialectProfile
from asynctaskmanager.infrastructure.engine import Database, Target, connect
from asynctaskmanager.infrastructure.leases import Leases
from asynctaskmanager.infrastructure.repositories import (
    SqlTaskConfigRepository,
    SqlTaskLogRepository,
    SqlTaskRepository,
    SqlWorkerRepository,
    TableRepository,
    only_reads,
)
from asynctaskmanager.infrastructure.transactions import TransactionRetry, TransactionRunner
from asynctaskmanager.infrastructure.unit_of_work import UnitOfWork
from asynctaskmanager.queue import QueueSettings, TaskQueue

T = TypeVar("T")
R = TypeVar("R", bound=TableRepository[Any])


class Storage:
    """Open with :func:`open_storage`. Close it (or use it as a context manager) to release
    every connection.

    ``tasks``, ``task_configs``, ``task_logs`` and ``workers`` run each call in its own
    transaction; :meth:`unit_of_work` shares one transaction across several calls.
    """

    tasks: TaskRepository
    task_configs: TaskConfigRepository
    task_logs: TaskLogRepository
    workers: WorkerRepository

    def __init__(
        self,
        database: Database,
        *,
        queue_settings: QueueSettings | None = None,
        retry: TransactionRetry | None = None,
    ) -> None:
        self.runner = TransactionRunner(database.engine, database.profile, retry)
        self.tasks = cast(TaskRepository, _AutoCommit(self.runner, "tasks", SqlTaskRepository))
        self.task_configs = cast(
            TaskConfigRepository, _AutoCommit(self.runner, "task_configs", SqlTaskConfigRepository)
        )
        self.task_logs = cast(
            TaskLogRepository, _AutoCommit(self.runner, "task_logs", SqlTaskLogRepository)
        )
        self.workers = cast(
            WorkerRepository, _AutoCommit(self.runner, "workers", SqlWorkerRepository)
        )
        self.queue = TaskQueue(self.runner, queue_settings or QueueSettings())
        self.leases = Leases(self.runner)

    @property
    def engine(self) -> Engine:
        return self.runner.engine

    @property
    def profile(self) -> DialectProfile:
        return self.runner.profile

    @property
    def retry(self) -> TransactionRetry:
        return self.runner.retry

    @property
    def backend(self) -> str:
        """``"memory"``, ``"sqlite"``, ``"mysql"`` or ``"postgresql"``."""
        return self.profile.name

    def unit_of_work(self, *, read_only: bool = False, sync_wait: bool = False) -> UnitOfWork:
        return self.runner.unit_of_work(read_only=read_only, sync_wait=sync_wait)

    def run(
        self, work: Callable[[UnitOfWork], T], *, read_only: bool = False, sync_wait: bool = False
    ) -> T:
        """Run ``work`` in one transaction and commit it, retrying transient failures.

        ``work`` may run more than once, so it must not have effects outside the database.
        ``sync_wait``: on a cluster, its reads see every commit made through other nodes.
        """
        return self.runner.run(work, read_only=read_only, sync_wait=sync_wait)

    def upgrade(self, revision: str = "head") -> None:
        """Bring the schema to ``revision`` with the bundled Alembic migrations."""
        if self.runner.guard is None:
            migrations.upgrade(self.engine, revision)
            return
        with self.runner.guard:
            migrations.upgrade(self.engine, revision)

    def schema_revision(self) -> str | None:
        return migrations.current_revision(self.engine)

    def close(self) -> None:
        self.queue.close()
        self.engine.dispose()

    def __enter__(self) -> Storage:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class _AutoCommit(Generic[R]):
    """A repository whose every call is its own retried transaction: read-only for the
    methods the repository marks with ``@reads``."""

    def __init__(self, runner: TransactionRunner, name: str, kind: type[R]) -> None:
        self._runner = runner
        self._name = name
        self._kind = kind

    def __getattr__(self, method: str) -> Callable[..., Any]:
        if method.startswith("_") or not callable(getattr(self._kind, method, None)):
            raise AttributeError(f"{self._kind.__name__} has no method {method!r}")
        read_only = only_reads(getattr(self._kind, method))

        def call(*args: Any, **kwargs: Any) -> Any:
            return self._runner.run(
                lambda uow: getattr(getattr(uow, self._name), method)(*args, **kwargs),
                read_only=read_only,
            )

        call.__name__ = method
        return call


def open_storage(
    target: Target = None,
    *,
    upgrade: bool = False,
    queue_settings: QueueSettings | None = None,
    retry: TransactionRetry | None = None,
    check_schema: bool = True,
) -> Storage:
    """Open a storage from a URL, a :class:`MySQLConfig` or :class:`PostgresConfig`, or
    ``"memory"``.

    With no target: ``ASYNCTASK_DATABASE_URL``, else the embedded ``sqlite:///asynctask.db``.
    The memory backend always starts from an empty, fully migrated schema. Other backends
    are migrated with ``alembic upgrade head``, ``asynctaskmanager upgrade``, or
    ``upgrade=True`` here. A schema behind the library's raises SchemaOutOfDateError, unless
    ``check_schema=False`` or ``ASYNCTASK_SKIP_SCHEMA_CHECK=1`` (rolling upgrades).
    """
    storage = Storage(connect(target), queue_settings=queue_settings, retry=retry)
    try:
        migrations.check_on_open(storage.engine, upgrading=upgrade, enabled=check_schema)
    except AsyncTaskManagerError:
        storage.close()
        raise
    if upgrade or storage.profile.ephemeral:
        try:
            storage.upgrade()
        except Exception as error:
            storage.close()
            if isinstance(error, StorageError):
                raise
            raise StorageError(f"migrating the database failed: {error}") from error
    return storage
