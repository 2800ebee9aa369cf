"""What the queue tests share: type configs and workers made in one line, the database's
clock, rows moved in time with plain Core UPDATEs, and counters of engine events.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, TypeVar

from sqlalchemy import event, func, select, update

from asynctaskmanager import (
    ExecutorType,
    LogType,
    QueueSettings,
    RetryStrategy,
    Storage,
    TaskConfig,
    TaskQueue,
    TaskStatus,
    UnitOfWork,
    Worker,
)
from asynctaskmanager.infrastructure.expressions import db_now
from asynctaskmanager.infrastructure.schema import task_log_table as lg
from asynctaskmanager.infrastructure.schema import task_table as t
from asynctaskmanager.infrastructure.schema import worker_table as w

T = TypeVar("T")
Events = TypeVar("Events", bound="EngineEvents")

SWEEP = QueueSettings(
    heartbeat_interval=timedelta(seconds=1), missed_heartbeats=2, retry_jitter=0.0
)
NO_JITTER = QueueSettings(retry_jitter=0.0)


def configure(storage: Storage, task_type: str = "job", **options: Any) -> TaskConfig:
    options.setdefault("retry_strategy", RetryStrategy.FIXED)
    options.setdefault("retry_delay", 0)
    config = TaskConfig(task_type, f"{task_type} tasks", ExecutorType.FUNCTION, **options)
    storage.task_configs.create(config)
    return config


def register(
    queue: TaskQueue,
    worker_id: str = "w1",
    *,
    capacity: int = 10,
    supported_types: list[str] | None = None,
) -> Worker:
    return queue.register_worker(
        Worker(
            worker_id,
            worker_id,
            "10.0.0.1:9000",
            capacity=capacity,
            supported_types=supported_types,
        )
    )


def in_tx(storage: Storage, work: Callable[[UnitOfWork], T]) -> T:
    return storage.run(work)


def now_of(storage: Storage) -> datetime:
    return in_tx(storage, lambda uow: uow.connection.execute(select(db_now())).scalar_one())


def set_task(storage: Storage, task_id: str, **values: Any) -> None:
    in_tx(
        storage,
        lambda uow: uow.connection.execute(
            update(t).where(t.c.task_id == task_id).values(**values)
        ),
    )


def set_worker(storage: Storage, worker_id: str, **values: Any) -> None:
    in_tx(
        storage,
        lambda uow: uow.connection.execute(
            update(w).where(w.c.worker_id == worker_id).values(**values)
        ),
    )


def logs_of(
    storage: Storage, task_id: str
) -> list[tuple[LogType, TaskStatus | None, TaskStatus | None]]:
    return [
        (log.log_type, log.from_status, log.to_status)
        for log in storage.task_logs.list_for_task(task_id)
    ]


def count_rows(storage: Storage) -> tuple[int, int]:
    def work(uow: UnitOfWork) -> tuple[int, int]:
        tasks = uow.connection.execute(select(func.count()).select_from(t)).scalar_one()
        logs = uow.connection.execute(select(func.count()).select_from(lg)).scalar_one()
        return int(tasks), int(logs)

    return in_tx(storage, work)


def load_of(storage: Storage, worker_id: str = "w1") -> int:
    return storage.workers.get(worker_id).current_load


def running_of(storage: Storage, worker_id: str = "w1") -> int:
    def work(uow: UnitOfWork) -> int:
        query = select(func.count()).where(
            t.c.worker_id == worker_id, t.c.status == TaskStatus.RUNNING.value
        )
        return int(uow.connection.execute(query).scalar_one())

    return in_tx(storage, work)


def assert_load_exact(storage: Storage, worker_id: str = "w1") -> None:
    assert load_of(storage, worker_id) == running_of(storage, worker_id)


def claim_if_due(storage: Storage, queue: TaskQueue, worker_id: str, due: datetime) -> list[str]:
    """Claim, and check that nothing was claimed while the database clock was before ``due``.

    Robust on a stalled machine: if ``due`` passed meanwhile, the claim may legitimately
    return the task, so only the ordering of the database clock decides.
    """
    claimed = [task.task_id for task in queue.claim(worker_id, limit=5)]
    if now_of(storage) < due:
        assert claimed == [], "a task was claimed before it was due by the database's clock"
    return claimed


def keep_alive(queue: TaskQueue, *worker_ids: str) -> None:
    """A heartbeat right before a sweep, so that a slow machine cannot make them look dead."""
    for worker_id in worker_ids:
        queue.heartbeat(worker_id)


class EngineEvents:
    """The calls of one engine event while the block runs (``commit`` counts commits on
    every backend: pysqlite's COMMIT is no cursor statement)."""

    def __init__(self, storage: Storage, name: str) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self._engine = storage.engine
        self._name = name

    def __enter__(self: Events) -> Events:
        event.listen(self._engine, self._name, self._record)
        return self

    def __exit__(self, *exc: object) -> None:
        event.remove(self._engine, self._name, self._record)

    def _record(self, *args: Any) -> None:
        self.calls.append(args)


class StatementCounter(EngineEvents):
    def __init__(self, storage: Storage) -> None:
        super().__init__(storage, "before_cursor_execute")

    @property
    def statements(self) -> list[str]:
        return [call[2] for call in self.calls]
