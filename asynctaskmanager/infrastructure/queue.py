"""The task lifecycle on top of the store: enqueue, claim, guarded transitions, the sweep.

Every operation is one transaction, run through ``Storage.run`` so that deadlocks and
lock-wait timeouts are retried with jitter. Time is always the database's clock: a worker
whose own clock is off can neither claim early nor rescue a live task.

Locks are taken in one order everywhere, task rows before worker rows, except in a claim,
which locks its own worker row first and then only pending rows that it skips if they are
locked; task-config rows are locked last, in key order.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import ColumnElement, Select, func, or_, select, update

from asynctaskmanager.domain import validation as check
from asynctaskmanager.domain.enums import LogType, TaskStatus, WorkerStatus
from asynctaskmanager.domain.lifecycle import RetryPolicy, ensure_transition
from asynctaskmanager.domain.models import Task, TaskConfig, TaskLog, Worker
from asynctaskmanager.domain.requests import TaskRequest
from asynctaskmanager.errors import (
    IllegalTransitionError,
    NotFoundError,
    TaskTypeDisabledError,
    UnknownTaskTypeError,
    ValidationError,
)
from asynctaskmanager.infrastructure.repositories.task_configs import row_to_config
from asynctaskmanager.infrastructure.repositories.tasks import row_to_task
from asynctaskmanager.infrastructure.schema import task_config_table as cfg
from asynctaskmanager.infrastructure.schema import task_table as t
from asynctaskmanager.infrastructure.schema import worker_table as w
from asynctaskmanager.infrastructure.types import UTCDateTime

if TYPE_CHECKING:
    from asynctaskmanager.infrastructure.storage import Storage
    from asynctaskmanager.infrastructure.unit_of_work import UnitOfWork

CLAIM_MAX = 1000


def db_now() -> ColumnElement[datetime]:
    """The database's clock, in UTC (connections are pinned to +00:00)."""
    return func.current_timestamp(type_=UTCDateTime()).label("db_now")


@dataclass(frozen=True)
class QueueSettings:
    """Timing rules of the queue.

    A worker is dead after ``missed_heartbeats`` intervals of ``heartbeat_interval`` with
    no heartbeat. Retry delays are capped at ``max_retry_delay`` seconds and lose up to
    ``retry_jitter`` of their length at random. A running task is overdue ``timeout_grace``
    seconds after its own timeout.
    """

    heartbeat_interval: timedelta = timedelta(seconds=10)
    missed_heartbeats: int = 3
    max_retry_delay: int = 3600
    retry_jitter: float = 0.1
    timeout_grace: timedelta = timedelta(0)

    @property
    def dead_after(self) -> timedelta:
        return self.heartbeat_interval * self.missed_heartbeats


@dataclass(frozen=True)
class SweepReport:
    workers_marked_offline: list[str]
    requeued: list[str]
    failed: list[str]


class TaskQueue:
    def __init__(self, storage: Storage, settings: QueueSettings) -> None:
        self._storage = storage
        self.settings = settings

    # --- enqueue ---------------------------------------------------------------------------

    def enqueue(self, task_type: str, payload: Any = None, **options: Any) -> Task:
        """Enqueue one task; see :class:`TaskRequest` for the options."""
        return self.enqueue_many([TaskRequest(task_type, payload, **options)])[0]

    def enqueue_many(self, requests: Iterable[TaskRequest]) -> list[Task]:
        """Enqueue many tasks in one transaction: all of them, or none.

        Unconfigured types raise :class:`UnknownTaskTypeError` and disabled types
        :class:`TaskTypeDisabledError`: a task no worker could ever claim is refused up front.
        """
        batch = list(requests)
        for index, request in enumerate(batch):
            if not isinstance(request, TaskRequest):
                raise ValidationError(f"requests[{index}]", "must be a TaskRequest", request)
        if not batch:
            return []

        def work(uow: UnitOfWork) -> list[Task]:
            types = sorted({request.task_type for request in batch})
            rows = uow.session.execute(
                select(cfg, db_now()).where(cfg.c.task_type.in_(types))
            ).all()
            configs = {row.task_type: row_to_config(row) for row in rows}
            now = rows[0][-1] if rows else uow.session.execute(select(db_now())).scalar_one()
            tasks = [_new_task(request, configs, now) for request in batch]
            uow.tasks.create_many(tasks)
            uow.task_logs.create_many(
                TaskLog(task.task_id, LogType.CREATED, None, TaskStatus.PENDING, created_at=now)
                for task in tasks
            )
            return tasks

        return self._storage.run(work)

    # --- claim -----------------------------------------------------------------------------

    def claim(self, worker_id: str, limit: int = 1) -> list[Task]:
        """Atomically claim up to ``limit`` runnable tasks for ``worker_id``.

        Runnable: pending, due by the database's clock, of a type the worker supports whose
        config is enabled. Highest priority first, then first in, first out. Never more than
        the worker's free capacity, nor more running tasks of a type than its max_concurrent.
        """
        check.identifier("worker_id", worker_id)
        check.integer("limit", limit, 1, CLAIM_MAX)
        return self._storage.run(lambda uow: self._claim(uow, worker_id, limit))

    def _claim(self, uow: UnitOfWork, worker_id: str, limit: int) -> list[Task]:
        session = uow.session
        worker = session.execute(
            select(w.c.status, w.c.capacity, w.c.current_load, w.c.supported_types, db_now())
            .where(w.c.worker_id == worker_id)
            .with_for_update()
        ).first()
        if worker is None:
            raise NotFoundError("worker", worker_id)
        status, capacity, load, supported, now = worker
        wanted = min(limit, capacity - load)
        if status != WorkerStatus.ONLINE.value or wanted <= 0:
            return []

        enabled = select(cfg.c.task_type).where(cfg.c.enabled == True)  # noqa: E712
        if supported is not None:
            enabled = enabled.where(cfg.c.task_type.in_(supported))
        types = list(session.execute(enabled).scalars())
        if not types:
            return []

        candidates = [
            row_to_task(row)
            for row in session.execute(self._claim_query(session, types, now, wanted))
        ]
        candidates = self._within_type_limits(uow, candidates)
        if not candidates:
            return []

        ids = [task.task_id for task in candidates]
        session.execute(
            update(t)
            .where(t.c.task_id.in_(ids), t.c.status == TaskStatus.PENDING.value)
            .values(status=TaskStatus.RUNNING.value, worker_id=worker_id, started_at=now)
        )
        uow.task_logs.create_many(
            TaskLog(
                task.task_id,
                LogType.CLAIMED,
                TaskStatus.PENDING,
                TaskStatus.RUNNING,
                details={"worker_id": worker_id, "attempt": task.retry_count + 1},
                created_at=now,
            )
            for task in candidates
        )
        session.execute(
            update(w)
            .where(w.c.worker_id == worker_id)
            .values(current_load=w.c.current_load + len(candidates))
        )
        return [
            replace(task, status=TaskStatus.RUNNING, worker_id=worker_id, started_at=now)
            for task in candidates
        ]

    def _claim_query(
        self, session: Any, types: Sequence[str], now: datetime, wanted: int
    ) -> Select[Any]:
        query = (
            select(t)
            .where(
                t.c.status == TaskStatus.PENDING.value,
                t.c.task_type.in_(types),
                or_(t.c.scheduled_at.is_(None), t.c.scheduled_at <= now),
            )
            .order_by(t.c.priority.desc(), t.c.created_at, t.c.task_id)
            .limit(wanted)
        )
        # SQLite ignores FOR UPDATE; there BEGIN IMMEDIATE already holds the write lock.
        skip_locked = self._storage.profile.supports_skip_locked(session.get_bind().dialect)
        return query.with_for_update(skip_locked=skip_locked)

    def _within_type_limits(self, uow: UnitOfWork, candidates: list[Task]) -> list[Task]:
        """Drop candidates that would take a type past its max_concurrent.

        The config rows of the candidates' types are locked, in key order, so that two
        claimers cannot both count the same free slot.
        """
        if not candidates:
            return []
        session = uow.session
        types = sorted({task.task_type for task in candidates})
        limits = dict(
            session.execute(
                select(cfg.c.task_type, cfg.c.max_concurrent)
                .where(cfg.c.task_type.in_(types), cfg.c.enabled == True)  # noqa: E712
                .order_by(cfg.c.task_type)
                .with_for_update()
            ).all()
        )
        running = dict(
            session.execute(
                select(t.c.task_type, func.count())
                .where(t.c.status == TaskStatus.RUNNING.value, t.c.task_type.in_(types))
                .group_by(t.c.task_type)
            ).all()
        )
        free = {task_type: limits[task_type] - running.get(task_type, 0) for task_type in limits}
        kept = []
        for task in candidates:
            if free.get(task.task_type, 0) > 0:
                free[task.task_type] -= 1
                kept.append(task)
        return kept

    # --- guarded transitions ------------------------------------------------------------------

    def complete(self, task: Task, result: Any = None) -> bool:
        """Mark the claimed ``task`` completed with ``result``.

        Applies only while this worker still holds this attempt; returns whether it did.
        """
        self._check_lease(task, TaskStatus.COMPLETED)
        check.json_document("result", result)

        def work(uow: UnitOfWork) -> bool:
            values = {
                "status": TaskStatus.COMPLETED.value,
                "result": result,
                "completed_at": db_now(),
            }
            if not self._end_attempt(uow, task, values):
                return False
            uow.task_logs.create(
                TaskLog(task.task_id, LogType.COMPLETED, TaskStatus.RUNNING, TaskStatus.COMPLETED)
            )
            return True

        return self._storage.run(work)

    def fail(self, task: Task, error_message: str, *, retry: bool = True) -> bool:
        """Record a failed attempt: retried later if retries are left (and ``retry``), else
        failed for good. Applies only while this worker still holds this attempt."""
        self._check_lease(task, TaskStatus.FAILED)
        check.long_text("error_message", error_message)

        def work(uow: UnitOfWork) -> bool:
            config, now = self._config_and_now(uow, task.task_type)
            retry_at = self._retry_at(task, config, now) if retry else None
            if retry_at is None:
                values: dict[str, Any] = {
                    "status": TaskStatus.FAILED.value,
                    "error_message": error_message,
                    "completed_at": now,
                }
            else:
                values = _requeue_values(task, error_message, retry_at)
            if not self._end_attempt(uow, task, values):
                return False
            uow.task_logs.create(_attempt_log(task, retry_at, error_message, LogType.FAILED))
            return True

        return self._storage.run(work)

    def cancel(self, task_id: str, reason: str | None = None) -> bool:
        """Cancel a pending or running task. A final task raises IllegalTransitionError.

        Returns False when the task changed under us and is no longer cancellable.
        """
        check.identifier("task_id", task_id)
        check.long_text("reason", reason)

        def work(uow: UnitOfWork) -> bool:
            task = uow.tasks.get(task_id)
            ensure_transition(task_id, task.status, TaskStatus.CANCELLED)
            result = uow.session.execute(
                update(t)
                .where(_same_attempt(task))
                .values(
                    status=TaskStatus.CANCELLED.value, completed_at=db_now(), error_message=reason
                )
            )
            if result.rowcount != 1:  # type: ignore[attr-defined]
                return False
            if task.status is TaskStatus.RUNNING and task.worker_id is not None:
                _release_slot(uow, task.worker_id)
            uow.task_logs.create(
                TaskLog(
                    task_id, LogType.CANCELLED, task.status, TaskStatus.CANCELLED, message=reason
                )
            )
            return True

        return self._storage.run(work)

    # --- workers ---------------------------------------------------------------------------

    def register_worker(self, worker: Worker) -> Worker:
        """Register (or re-register) a worker as online with a fresh heartbeat.

        A worker that registers again under the same id is a new incarnation: whatever the
        old one still held is taken back first, as from a dead worker.
        """
        if not isinstance(worker, Worker):
            raise ValidationError("worker", "must be a Worker", worker)
        self._rescue_held_by(worker.worker_id, "worker re-registered")

        def work(uow: UnitOfWork) -> Worker:
            now = uow.session.execute(select(db_now())).scalar_one()
            fresh = replace(worker, status=WorkerStatus.ONLINE, current_load=0, last_heartbeat=now)
            if uow.workers.find(worker.worker_id) is None:
                uow.workers.create(fresh)
            else:
                uow.workers.update(fresh)
            return fresh

        return self._storage.run(work)

    def heartbeat(self, worker_id: str) -> set[str]:
        """Record that the worker is alive; returns the ids of the tasks it still holds.

        A task missing from the answer was taken back: the worker should stop working on it
        (its completion would be refused anyway).
        """
        check.identifier("worker_id", worker_id)

        def work(uow: UnitOfWork) -> set[str]:
            result = uow.session.execute(
                update(w)
                .where(w.c.worker_id == worker_id)
                .values(last_heartbeat=db_now(), status=WorkerStatus.ONLINE.value)
            )
            if result.rowcount != 1:  # type: ignore[attr-defined]
                raise NotFoundError("worker", worker_id)
            held = select(t.c.task_id).where(
                t.c.worker_id == worker_id, t.c.status == TaskStatus.RUNNING.value
            )
            return set(uow.session.execute(held).scalars())

        return self._storage.run(work)

    def deregister_worker(self, worker_id: str) -> None:
        """Take the worker offline; whatever it still holds is requeued (or failed)."""
        check.identifier("worker_id", worker_id)
        self._storage.run(lambda uow: _set_worker_status(uow, worker_id, WorkerStatus.OFFLINE))
        self._rescue_held_by(worker_id, "worker deregistered")

    # --- sweep -----------------------------------------------------------------------------

    def sweep(self) -> SweepReport:
        """Take back the tasks of dead workers and the tasks running past their timeout.

        Safe to run from several processes at once: each task is taken back by a guarded
        update, in its own transaction, so at most one sweeper wins it.
        """
        dead_after = self.settings.dead_after
        grace = self.settings.timeout_grace

        def find(uow: UnitOfWork) -> tuple[list[str], list[Task]]:
            now = uow.session.execute(select(db_now())).scalar_one()
            dead = list(
                uow.session.execute(
                    select(w.c.worker_id).where(
                        w.c.last_heartbeat < now - dead_after,
                        w.c.status != WorkerStatus.OFFLINE.value,
                    )
                ).scalars()
            )
            running = [
                row_to_task(row)
                for row in uow.session.execute(
                    select(t).where(t.c.status == TaskStatus.RUNNING.value)
                )
            ]
            overdue = [
                task
                for task in running
                if task.worker_id in dead
                or (
                    task.started_at is not None
                    and task.started_at + timedelta(seconds=task.timeout) + grace < now
                )
            ]
            return dead, overdue

        dead, overdue = self._storage.run(find)
        offline = [
            worker_id
            for worker_id in dead
            if self._storage.run(lambda uow, wid=worker_id: _mark_dead(uow, wid, dead_after))
        ]
        requeued: list[str] = []
        failed: list[str] = []
        for task in overdue:
            reason = "worker lost" if task.worker_id in dead else f"timed out after {task.timeout}s"
            outcome = self._storage.run(
                lambda uow, task=task, reason=reason: self._rescue(uow, task, reason)
            )
            if outcome is TaskStatus.PENDING:
                requeued.append(task.task_id)
            elif outcome is TaskStatus.FAILED:
                failed.append(task.task_id)
        return SweepReport(offline, requeued, failed)

    # --- helpers ---------------------------------------------------------------------------

    def _rescue_held_by(self, worker_id: str, reason: str) -> None:
        held = self._storage.run(
            lambda uow: [
                row_to_task(row)
                for row in uow.session.execute(
                    select(t).where(
                        t.c.worker_id == worker_id, t.c.status == TaskStatus.RUNNING.value
                    )
                )
            ]
        )
        for task in held:
            self._storage.run(lambda uow, task=task: self._rescue(uow, task, reason))

    def _rescue(self, uow: UnitOfWork, task: Task, reason: str) -> TaskStatus | None:
        """Take one attempt back from its worker: requeue it as a retry, or fail it."""
        config, now = self._config_and_now(uow, task.task_type)
        retry_at = self._retry_at(task, config, now)
        if retry_at is None:
            values: dict[str, Any] = {
                "status": TaskStatus.FAILED.value,
                "error_message": reason,
                "completed_at": now,
            }
        else:
            values = _requeue_values(task, reason, retry_at)
        if not self._end_attempt(uow, task, values):
            return None
        uow.task_logs.create(_attempt_log(task, retry_at, reason, LogType.RESCUED))
        return TaskStatus.FAILED if retry_at is None else TaskStatus.PENDING

    def _end_attempt(self, uow: UnitOfWork, task: Task, values: dict[str, Any]) -> bool:
        """Apply ``values`` if ``task``'s attempt is still the one running, and free its slot."""
        result = uow.session.execute(update(t).where(_same_attempt(task)).values(**values))
        if result.rowcount != 1:  # type: ignore[attr-defined]
            return False
        assert task.worker_id is not None
        _release_slot(uow, task.worker_id)
        return True

    def _config_and_now(
        self, uow: UnitOfWork, task_type: str
    ) -> tuple[TaskConfig | None, datetime]:
        row = uow.session.execute(select(cfg, db_now()).where(cfg.c.task_type == task_type)).first()
        if row is None:
            return None, uow.session.execute(select(db_now())).scalar_one()
        return row_to_config(row), row[-1]

    def _retry_at(self, task: Task, config: TaskConfig | None, now: datetime) -> datetime | None:
        if task.retry_count >= task.max_retry:
            return None
        if config is None:
            return now
        policy = RetryPolicy(
            config.retry_strategy,
            config.retry_delay,
            config.backoff_rate,
            max_delay=self.settings.max_retry_delay,
            jitter=self.settings.retry_jitter,
        )
        return now + timedelta(seconds=policy.delay_seconds(task.retry_count + 1, random.Random()))

    def _check_lease(self, task: Task, to_status: TaskStatus) -> None:
        if not isinstance(task, Task):
            raise ValidationError("task", "must be the Task returned by claim()", task)
        ensure_transition(task.task_id, task.status, to_status)
        if task.worker_id is None:
            raise IllegalTransitionError(task.task_id, task.status.value, to_status.value)


def _new_task(request: TaskRequest, configs: dict[str, TaskConfig], now: datetime) -> Task:
    config = configs.get(request.task_type)
    if config is None:
        raise UnknownTaskTypeError(request.task_type)
    if not config.enabled:
        raise TaskTypeDisabledError(request.task_type)
    scheduled_at = request.scheduled_at
    if request.delay is not None:
        scheduled_at = now + request.delay
    return Task(
        request.task_type,
        request.payload,
        task_id=request.task_id,
        priority=request.priority,
        timeout=config.default_timeout if request.timeout is None else request.timeout,
        max_retry=config.default_max_retry if request.max_retry is None else request.max_retry,
        created_at=now,
        scheduled_at=scheduled_at,
    )


def _same_attempt(task: Task) -> ColumnElement[bool]:
    """This task, in this state, held by this worker, in this attempt.

    retry_count grows on every requeue, so a task rescued and claimed again (even by the
    same worker) no longer matches an older attempt.
    """
    worker = t.c.worker_id.is_(None) if task.worker_id is None else t.c.worker_id == task.worker_id
    return (
        (t.c.task_id == task.task_id)
        & (t.c.status == task.status.value)
        & worker
        & (t.c.retry_count == task.retry_count)
    )


def _requeue_values(task: Task, reason: str, retry_at: datetime) -> dict[str, Any]:
    return {
        "status": TaskStatus.PENDING.value,
        "retry_count": task.retry_count + 1,
        "scheduled_at": retry_at,
        "worker_id": None,
        "started_at": None,
        "error_message": reason,
    }


def _attempt_log(task: Task, retry_at: datetime | None, reason: str, log_type: LogType) -> TaskLog:
    if retry_at is None:
        return TaskLog(
            task.task_id,
            log_type,
            TaskStatus.RUNNING,
            TaskStatus.FAILED,
            message=reason,
            details={"worker_id": task.worker_id, "attempt": task.retry_count + 1},
        )
    return TaskLog(
        task.task_id,
        LogType.RETRY_SCHEDULED if log_type is LogType.FAILED else log_type,
        TaskStatus.RUNNING,
        TaskStatus.PENDING,
        message=reason,
        details={
            "worker_id": task.worker_id,
            "attempt": task.retry_count + 1,
            "retry_at": retry_at.isoformat(),
        },
    )


def _release_slot(uow: UnitOfWork, worker_id: str) -> None:
    uow.session.execute(
        update(w)
        .where(w.c.worker_id == worker_id, w.c.current_load > 0)
        .values(current_load=w.c.current_load - 1)
    )


def _set_worker_status(uow: UnitOfWork, worker_id: str, status: WorkerStatus) -> None:
    result = uow.session.execute(
        update(w).where(w.c.worker_id == worker_id).values(status=status.value)
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        raise NotFoundError("worker", worker_id)


def _mark_dead(uow: UnitOfWork, worker_id: str, dead_after: timedelta) -> bool:
    """Offline, if it is still silent by the database's clock (it may have just woken up)."""
    now = uow.session.execute(select(db_now())).scalar_one()
    result = uow.session.execute(
        update(w)
        .where(
            w.c.worker_id == worker_id,
            w.c.last_heartbeat < now - dead_after,
            w.c.status != WorkerStatus.OFFLINE.value,
        )
        .values(status=WorkerStatus.OFFLINE.value)
    )
    return bool(result.rowcount == 1)  # type: ignore[attr-defined]
