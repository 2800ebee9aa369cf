"""The task lifecycle on top of the store: enqueue, claim, guarded transitions, the sweep.

Every operation is one transaction, run through ``Storage.run`` so that deadlocks and
lock-wait timeouts are retried with jitter. Time is always the database's clock: a worker
whose own clock is off can neither claim early nor rescue a live task.

Locks are taken in one order everywhere, task rows before worker rows, except in a claim.
A claim locks its own worker row, then pending task rows, skipping those locked by others,
and last the task-config rows of the types it took (in key order), to check max_concurrent
against the running count, its own rows included, just before it commits. Claimers of a
type are serialised only for that check and the commit, and the check is exact: each one
sees every claim committed before it. A claim that would exceed a limit is rolled back and
run again the careful way, which locks the config rows first (that way is also the only way
where the server has no SKIP LOCKED). Nothing else locks task-config rows, and with SKIP
LOCKED a claim never waits on a task row, so the orders cannot deadlock. In the plain FOR
UPDATE fallback a claim may wait on a row that a sweep is requeueing while the sweep waits
on that claim's worker row: the server breaks that rare deadlock and the loser is retried
like any other. complete_and_claim holds its completed task row, then its worker row, before
it claims in the order above; on MySQL it does so only with SKIP LOCKED, so it waits on
nothing but config rows, whose holders wait on nothing; without SKIP LOCKED, or over a
limit, it commits the completion first and claims on its own.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from functools import lru_cache, partial
from typing import TYPE_CHECKING, Any, NamedTuple

from sqlalchemy import (
    ColumnElement,
    Connection,
    Executable,
    Integer,
    Row,
    Select,
    bindparam,
    case,
    func,
    or_,
    select,
    update,
)

from asynctaskmanager.domain import limits
from asynctaskmanager.domain import validation as check
from asynctaskmanager.domain.enums import LogType, TaskStatus, WorkerStatus
from asynctaskmanager.domain.ids import new_id
from asynctaskmanager.domain.lifecycle import RetryPolicy, ensure_transition
from asynctaskmanager.domain.models import Task, TaskConfig, TaskLog, Worker, restore
from asynctaskmanager.domain.requests import TaskRequest
from asynctaskmanager.errors import (
    IllegalTransitionError,
    NotFoundError,
    StorageError,
    TaskTypeDisabledError,
    UnknownTaskTypeError,
    ValidationError,
)
from asynctaskmanager.infrastructure.expressions import db_now, filter_only
from asynctaskmanager.infrastructure.repositories.task_configs import row_to_config
from asynctaskmanager.infrastructure.repositories.tasks import row_to_task
from asynctaskmanager.infrastructure.retention import FINAL_STATUSES, PruneReport, prune_finished
from asynctaskmanager.infrastructure.schema import task_config_table as cfg
from asynctaskmanager.infrastructure.schema import task_table as t
from asynctaskmanager.infrastructure.schema import worker_table as w
from asynctaskmanager.infrastructure.types import UTCDateTime

if TYPE_CHECKING:
    from asynctaskmanager.infrastructure.storage import Storage
    from asynctaskmanager.infrastructure.unit_of_work import UnitOfWork

CLAIM_MAX = 1000


# The hot paths' statements (claim, complete), built once. Building a Core statement and
# computing its cache key cost more CPU than running it on a local database; a prebuilt
# statement only binds its parameters. (Parameter names must not be column names: in an
# UPDATE those would become SET clauses.)
# Each statement that takes a list has a one-value twin: an expanding IN costs more to bind
# than the rest of the statement, and one type (one task) is the common case.
# What an enqueue needs of its types' configs: whether they are enabled, and the defaults.
_TYPE_DEFAULTS = select(
    cfg.c.task_type, cfg.c.enabled, cfg.c.default_timeout, cfg.c.default_max_retry, db_now()
)
_DEFAULTS_OF_TYPES = _TYPE_DEFAULTS.where(cfg.c.task_type.in_(bindparam("p_types", expanding=True)))
_DEFAULTS_OF_TYPE = _TYPE_DEFAULTS.where(cfg.c.task_type == bindparam("p_type"))
_LOCK_WORKER = (
    select(w.c.status, w.c.capacity, w.c.current_load, w.c.supported_types)
    .where(w.c.worker_id == bindparam("p_worker_id"))
    .with_for_update()
)
_ENABLED_LIMITS = (
    select(cfg.c.task_type, cfg.c.max_concurrent)
    .where(cfg.c.enabled == True)  # noqa: E712
    .order_by(cfg.c.task_type)
)
_LIMITS_OF = _ENABLED_LIMITS.where(cfg.c.task_type.in_(bindparam("p_types", expanding=True)))
# The same, with the rows locked in key order (see the module's docstring).
_LOCK_ENABLED_LIMITS = _ENABLED_LIMITS.with_for_update()
_LOCK_LIMITS_OF = _LIMITS_OF.with_for_update()
_RUNNING_BY_TYPE = (
    select(t.c.task_type, func.count())
    .where(
        t.c.status == TaskStatus.RUNNING.value,
        t.c.task_type.in_(bindparam("p_types", expanding=True)),
    )
    .group_by(t.c.task_type)
)
_RUNNING_OF_TYPE = (
    select(t.c.task_type, func.count())
    .where(t.c.status == TaskStatus.RUNNING.value, t.c.task_type == bindparam("p_type"))
    .group_by(t.c.task_type)
)


_MARK_RUNNING = (
    update(t)
    .where(
        t.c.task_id.in_(bindparam("p_task_ids", expanding=True)),
        filter_only(t.c.status) == TaskStatus.PENDING.value,
    )
    .values(
        status=TaskStatus.RUNNING.value,
        worker_id=bindparam("p_worker_id"),
        started_at=bindparam("p_now", type_=UTCDateTime()),
    )
)
_MARK_ONE_RUNNING = (
    update(t)
    .where(t.c.task_id == bindparam("p_task_id"), t.c.status == TaskStatus.PENDING.value)
    .values(
        status=TaskStatus.RUNNING.value,
        worker_id=bindparam("p_worker_id"),
        started_at=bindparam("p_now", type_=UTCDateTime()),
    )
)
_ADD_LOAD = (
    update(w)
    .where(w.c.worker_id == bindparam("p_worker_id"))
    .values(current_load=w.c.current_load + bindparam("p_count", type_=Integer()))
)
_RELEASE_SLOT = (
    update(w)
    .where(w.c.worker_id == bindparam("p_worker_id"), w.c.current_load > 0)
    .values(current_load=w.c.current_load - 1)
)
# The attempt a worker holds: this task, in this state, held by this worker, in this attempt.
# retry_count grows on every requeue, so a task rescued and claimed again (even by the same
# worker) no longer matches an older attempt. Parameters come from _held_attempt(task).
_HELD_ATTEMPT = (
    (t.c.task_id == bindparam("p_task_id"))
    & (t.c.status == bindparam("p_status"))
    & (t.c.worker_id == bindparam("p_worker_id"))
    & (t.c.retry_count == bindparam("p_retry_count"))
)
_COMPLETE = (
    update(t)
    .where(_HELD_ATTEMPT)
    .values(
        status=TaskStatus.COMPLETED.value,
        result=bindparam("p_result", type_=t.c.result.type),
        completed_at=db_now(),
    )
)


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

    def __post_init__(self) -> None:
        for name in ("heartbeat_interval", "timeout_grace"):
            value = getattr(self, name)
            if not isinstance(value, timedelta) or value < timedelta(0):
                raise ValidationError(name, "must be a timedelta of at least 0", value)
        if self.heartbeat_interval <= timedelta(0):
            raise ValidationError("heartbeat_interval", "must be positive", self.heartbeat_interval)
        check.integer("missed_heartbeats", self.missed_heartbeats, 1)
        check.integer("max_retry_delay", self.max_retry_delay, 0)
        if isinstance(self.retry_jitter, bool) or not isinstance(self.retry_jitter, (int, float)):
            raise ValidationError(
                "retry_jitter", "must be a number between 0 and 1", self.retry_jitter
            )
        if not 0 <= self.retry_jitter <= 1:
            raise ValidationError("retry_jitter", "must be between 0 and 1", self.retry_jitter)

    @property
    def dead_after(self) -> timedelta:
        return self.heartbeat_interval * self.missed_heartbeats


class CompletionAndClaim(NamedTuple):
    """What :meth:`TaskQueue.complete_and_claim` did: whether the completion applied, and
    the tasks claimed."""

    completed: bool
    claimed: list[Task]


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
        if isinstance(requests, (str, bytes)) or not isinstance(requests, Iterable):
            raise ValidationError("requests", "must be an iterable of TaskRequest", requests)
        batch = list(requests)
        for index, request in enumerate(batch):
            if not isinstance(request, TaskRequest):
                raise ValidationError(f"requests[{index}]", "must be a TaskRequest", request)
        if not batch:
            return []

        def work(uow: UnitOfWork) -> list[Task]:
            types = sorted({request.task_type for request in batch})
            if len(types) == 1:
                rows = uow.connection.execute(_DEFAULTS_OF_TYPE, {"p_type": types[0]}).all()
            else:
                rows = uow.connection.execute(_DEFAULTS_OF_TYPES, {"p_types": types}).all()
            defaults = {row.task_type: row for row in rows}
            now = rows[0][-1] if rows else uow.connection.execute(select(db_now())).scalar_one()
            tasks = [_new_task(request, defaults, now) for request in batch]
            # No SAVEPOINT: any failure here ends the transaction.
            uow.tasks.create_many(tasks, savepoint=False)
            uow.task_logs.create_many(
                (
                    _log(task.task_id, LogType.CREATED, None, TaskStatus.PENDING, created_at=now)
                    for task in tasks
                ),
                savepoint=False,
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
        claim = partial(self._claim, worker_id=worker_id, limit=limit)
        if self._skip_locked():
            try:
                return self._storage.run(claim)
            except _OverLimit:
                pass  # rolled back; a type is at its max_concurrent: count under its lock
        return self._storage.run(partial(claim, lock_limits_first=True))

    def complete_and_claim(
        self, task: Task, result: Any = None, limit: int = 1
    ) -> CompletionAndClaim:
        """:meth:`complete` ``task``, then :meth:`claim` up to ``limit`` tasks for its worker,
        in one transaction: a worker that takes one task at a time commits once per task
        instead of twice.

        The claim runs even when the completion does not apply (the task was taken back):
        the worker is free either way. Where the claim would exceed a max_concurrent (or a
        MySQL server has no SKIP LOCKED), the completion is committed on its own first, so
        that no claim can cost it, and the claim follows as :meth:`claim` would run it.
        After an exception the completion may or may not have applied; :meth:`complete`
        the task again (it applies at most once).
        """
        self._check_lease(task, TaskStatus.COMPLETED)
        check.json_document("result", result)
        check.integer("limit", limit, 1, CLAIM_MAX)
        worker_id = task.worker_id
        assert worker_id is not None  # _check_lease
        complete = partial(self._complete, task=task, result=result)
        claim = partial(self._claim, worker_id=worker_id, limit=limit)

        def both(uow: UnitOfWork, lock_limits_first: bool = False) -> CompletionAndClaim:
            return CompletionAndClaim(
                complete(uow), claim(uow, lock_limits_first=lock_limits_first)
            )

        if self._skip_locked():
            try:
                return self._storage.run(both)
            except _OverLimit:
                pass  # both halves rolled back
        elif self._storage.profile.single_writer:
            # SQLite: the write lock serialises everything, limits are counted under it.
            return self._storage.run(partial(both, lock_limits_first=True))
        completed = self._storage.run(complete)
        return CompletionAndClaim(
            completed, self._storage.run(partial(claim, lock_limits_first=True))
        )

    def _skip_locked(self) -> bool:
        return self._storage.profile.supports_skip_locked(self._storage.engine.dialect)

    def _claim(
        self, uow: UnitOfWork, worker_id: str, limit: int, lock_limits_first: bool = False
    ) -> list[Task]:
        """One claim, checking max_concurrent last (see the module's docstring) unless
        ``lock_limits_first``: then the config rows are locked before anything is counted."""
        session = uow.connection
        worker = session.execute(_LOCK_WORKER, {"p_worker_id": worker_id}).first()
        if worker is None:
            raise NotFoundError("worker", worker_id)
        status, capacity, load, supported = worker
        wanted = min(limit, capacity - load)
        if status != WorkerStatus.ONLINE.value or wanted <= 0:
            return []
        if supported is not None and not supported:
            return []
        room = _free_slots(session, supported, lock=lock_limits_first)
        if not room:
            return []
        skip_locked = self._skip_locked()
        candidates, now = _pick(session, room, wanted, skip_locked)
        if not candidates:
            return []
        assert now is not None

        ids = [row["task_id"] for row in candidates]
        if len(ids) == 1:
            mark = {"p_task_id": ids[0], "p_worker_id": worker_id, "p_now": now}
            result = session.execute(_MARK_ONE_RUNNING, mark)
        else:
            mark = {"p_task_ids": ids, "p_worker_id": worker_id, "p_now": now}
            result = session.execute(_MARK_RUNNING, mark)
        if result.rowcount != len(ids):
            # The rows are locked (or the database is, on SQLite): this cannot happen unless
            # the locking is broken. Never hand out a task that someone else may hold.
            raise StorageError(f"claim: {result.rowcount} of {len(ids)} locked rows updated")
        uow.task_logs.create_many(
            (
                _log(
                    row["task_id"],
                    LogType.CLAIMED,
                    TaskStatus.PENDING,
                    TaskStatus.RUNNING,
                    details={"worker_id": worker_id, "attempt": row["retry_count"] + 1},
                    created_at=now,
                )
                for row in candidates
            ),
            savepoint=False,
        )
        session.execute(_ADD_LOAD, {"p_worker_id": worker_id, "p_count": len(candidates)})
        if not lock_limits_first:
            taken = sorted({row["task_type"] for row in candidates})
            free = _free_slots(session, taken, lock=True, keep_full=True)
            if any(free.get(task_type, -1) < 0 for task_type in taken):
                raise _OverLimit  # or a type was disabled meanwhile
        running = {"status": TaskStatus.RUNNING, "worker_id": worker_id, "started_at": now}
        return [restore(Task, row | running) for row in candidates]

    # --- guarded transitions ------------------------------------------------------------------

    def complete(self, task: Task, result: Any = None) -> bool:
        """Mark the claimed ``task`` completed with ``result``.

        Applies only while this worker still holds this attempt; returns whether it did.
        """
        self._check_lease(task, TaskStatus.COMPLETED)
        check.json_document("result", result)
        return self._storage.run(partial(self._complete, task=task, result=result))

    def _complete(self, uow: UnitOfWork, task: Task, result: Any) -> bool:
        if not self._end_attempt(uow, task, _COMPLETE, {"p_result": result}):
            return False
        uow.task_logs.create(
            _log(task.task_id, LogType.COMPLETED, TaskStatus.RUNNING, TaskStatus.COMPLETED)
        )
        return True

    def fail(self, task: Task, error_message: str, *, retry: bool = True) -> bool:
        """Record a failed attempt: retried later if retries are left (and ``retry``), else
        failed for good. Applies only while this worker still holds this attempt."""
        self._check_lease(task, TaskStatus.FAILED)
        check.long_text("error_message", error_message)
        check.boolean("retry", retry)

        def work(uow: UnitOfWork) -> bool:
            config, now = self._config_and_now(uow, task.task_type)
            retry_at = self._retry_at(task, config, now) if retry else None
            values = _attempt_end_values(task, error_message, retry_at, now)
            if not self._end_attempt(uow, task, update(t).where(_HELD_ATTEMPT).values(values)):
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
            # Locked, so that a claim or a completion cannot slip in between the check and
            # the update (task row before worker row, as everywhere).
            row = uow.connection.execute(
                select(t).where(t.c.task_id == task_id).with_for_update()
            ).first()
            if row is None:
                raise NotFoundError("task", task_id)
            task = row_to_task(row)
            ensure_transition(task_id, task.status, TaskStatus.CANCELLED)
            result = uow.connection.execute(
                update(t)
                .where(_same_attempt(task))
                .values(
                    status=TaskStatus.CANCELLED.value, completed_at=db_now(), error_message=reason
                )
            )
            if result.rowcount != 1:
                return False
            if task.status is TaskStatus.RUNNING and task.worker_id is not None:
                _release_slot(uow, task.worker_id)
            uow.task_logs.create(
                _log(task_id, LogType.CANCELLED, task.status, TaskStatus.CANCELLED, message=reason)
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
            now = uow.connection.execute(select(db_now())).scalar_one()
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
            result = uow.connection.execute(
                update(w)
                .where(w.c.worker_id == worker_id)
                # A worker marked offline for silence is alive after all; a draining one
                # stays draining.
                .values(
                    last_heartbeat=db_now(),
                    status=case(
                        (w.c.status == WorkerStatus.OFFLINE.value, WorkerStatus.ONLINE.value),
                        else_=w.c.status,
                    ),
                )
            )
            if result.rowcount != 1:
                raise NotFoundError("worker", worker_id)
            held = select(t.c.task_id).where(
                t.c.worker_id == worker_id, t.c.status == TaskStatus.RUNNING.value
            )
            return set(uow.connection.execute(held).scalars())

        return self._storage.run(work)

    def deregister_worker(self, worker_id: str) -> None:
        """Take the worker offline; whatever it still holds is requeued (or failed)."""
        check.identifier("worker_id", worker_id)
        self._storage.run(lambda uow: _set_worker_status(uow, worker_id, WorkerStatus.OFFLINE))
        self._rescue_held_by(worker_id, "worker deregistered")

    # --- sweep -----------------------------------------------------------------------------

    def sweep(self) -> SweepReport:
        """Take back the tasks of dead workers and the tasks running past their timeout.

        A worker is dead when its last heartbeat is older than ``dead_after`` by the
        database's clock. Its tasks are taken back only if it is still silent when each one
        is taken: a worker whose heartbeat arrives meanwhile keeps them. Safe to run from
        several processes at once: each task is taken back by a guarded update, in its own
        transaction, so at most one sweeper wins it.
        """
        dead_after = self.settings.dead_after
        grace = self.settings.timeout_grace

        def find(uow: UnitOfWork) -> tuple[list[str], list[tuple[Task, bool, bool]]]:
            now = uow.connection.execute(select(db_now())).scalar_one()
            # Silent workers, offline ones included: an earlier sweep may have marked one
            # offline and stopped before taking back its tasks.
            holders = select(t.c.worker_id).where(t.c.status == TaskStatus.RUNNING.value)
            silent = dict(
                uow.connection.execute(
                    select(w.c.worker_id, w.c.status).where(
                        w.c.last_heartbeat < now - dead_after,
                        or_(w.c.status != WorkerStatus.OFFLINE.value, w.c.worker_id.in_(holders)),
                    )
                ).all()
            )
            running = [
                row_to_task(row)
                for row in uow.connection.execute(
                    select(t).where(t.c.status == TaskStatus.RUNNING.value)
                )
            ]
            overdue = []
            for task in running:
                lost = task.worker_id in silent
                timed_out = (
                    task.started_at is not None
                    and task.started_at + timedelta(seconds=task.timeout) + grace < now
                )
                if lost or timed_out:
                    overdue.append((task, lost, timed_out))
            dead = sorted(
                worker_id
                for worker_id, status in silent.items()
                if status != WorkerStatus.OFFLINE.value
            )
            return dead, overdue

        dead, overdue = self._storage.run(find)
        offline = [
            worker_id
            for worker_id in dead
            if self._storage.run(partial(_mark_dead, worker_id=worker_id, dead_after=dead_after))
        ]
        requeued: list[str] = []
        failed: list[str] = []
        for task, lost, timed_out in overdue:
            outcome: TaskStatus | None = None
            alive = False
            if lost:
                try:
                    outcome = self._storage.run(
                        partial(
                            self._rescue, task=task, reason="worker lost", silent_for=dead_after
                        )
                    )
                except _WorkerAlive:
                    alive = True
            if timed_out and (alive or not lost):
                reason = f"timed out after {task.timeout}s"
                outcome = self._storage.run(partial(self._rescue, task=task, reason=reason))
            if outcome is TaskStatus.PENDING:
                requeued.append(task.task_id)
            elif outcome is TaskStatus.FAILED:
                failed.append(task.task_id)
        return SweepReport(offline, requeued, failed)

    # --- retention -------------------------------------------------------------------------

    def prune(
        self,
        older_than: timedelta,
        *,
        statuses: Iterable[TaskStatus] = FINAL_STATUSES,
        batch_size: int = 1000,
        on_batch: Callable[[int], None] | None = None,
    ) -> PruneReport:
        """Delete the finished tasks (and their log rows) that ended ``older_than`` ago,
        and the workers offline and silent for that long (and at least ``dead_after``) that
        hold nothing.

        By the database's clock; in batches of ``batch_size``, each its own transaction.
        ``statuses`` narrows which final statuses go (e.g. keep failed tasks longer).
        ``on_batch`` is called after each batch with the tasks it deleted (for progress).
        """
        return prune_finished(
            self._storage,
            older_than,
            statuses=statuses,
            batch_size=batch_size,
            worker_grace=self.settings.dead_after,
            on_batch=on_batch,
        )

    # --- helpers ---------------------------------------------------------------------------

    def _rescue_held_by(self, worker_id: str, reason: str) -> None:
        held = self._storage.run(
            lambda uow: [
                row_to_task(row)
                for row in uow.connection.execute(
                    select(t).where(
                        t.c.worker_id == worker_id, t.c.status == TaskStatus.RUNNING.value
                    )
                )
            ]
        )
        for task in held:
            self._storage.run(partial(self._rescue, task=task, reason=reason))

    def _rescue(
        self, uow: UnitOfWork, task: Task, reason: str, silent_for: timedelta | None = None
    ) -> TaskStatus | None:
        """Take one attempt back from its worker: requeue it as a retry, or fail it.

        With ``silent_for``, only if the worker's last heartbeat is still older than that by
        the database's clock; else :class:`_WorkerAlive` rolls the transaction back. The check
        locks the worker row after the task row, so a heartbeat either comes first (and the
        task stays) or waits and then no longer lists the task.
        """
        config, now = self._config_and_now(uow, task.task_type)
        retry_at = self._retry_at(task, config, now)
        values = _attempt_end_values(task, reason, retry_at, now)
        if not self._end_attempt(uow, task, update(t).where(_HELD_ATTEMPT).values(values)):
            return None
        if silent_for is not None and task.worker_id is not None:
            still_silent = uow.connection.execute(
                update(w)
                .where(w.c.worker_id == task.worker_id, w.c.last_heartbeat < now - silent_for)
                .values(status=WorkerStatus.OFFLINE.value)
            )
            if still_silent.rowcount != 1:
                raise _WorkerAlive(task.worker_id)
        uow.task_logs.create(_attempt_log(task, retry_at, reason, LogType.RESCUED))
        return TaskStatus.FAILED if retry_at is None else TaskStatus.PENDING

    def _end_attempt(
        self,
        uow: UnitOfWork,
        task: Task,
        statement: Executable,
        params: dict[str, Any] | None = None,
    ) -> bool:
        """Run ``statement`` (guarded by _HELD_ATTEMPT) and, if it still matched ``task``'s
        attempt, free the worker's slot."""
        assert task.worker_id is not None  # _check_lease, or a running task found by a sweep
        held = {
            "p_task_id": task.task_id,
            "p_status": task.status.value,
            "p_worker_id": task.worker_id,
            "p_retry_count": task.retry_count,
        }
        if uow.connection.execute(statement, held | (params or {})).rowcount != 1:
            return False
        _release_slot(uow, task.worker_id)
        return True

    def _config_and_now(
        self, uow: UnitOfWork, task_type: str
    ) -> tuple[TaskConfig | None, datetime]:
        row = uow.connection.execute(
            select(cfg, db_now()).where(cfg.c.task_type == task_type)
        ).first()
        if row is None:
            return None, uow.connection.execute(select(db_now())).scalar_one()
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


def claim_statement(types: Sequence[str], limit: int, *, skip_locked: bool) -> Select[Any]:
    """The claim's SELECT: runnable tasks of ``types`` in claim order, locked, with the
    database's clock as a last column (``db_now``).

    Due-ness is judged in SQL against the database's clock, read by this statement, after
    the worker and task-config locks are held (a clock read before a long lock wait would
    start the attempt in the past and time it out early).

    Served by ``ix_task_claim`` (status, priority DESC, created_at, task_id) without a
    filesort. ``skip_locked`` where the server has it; else a plain FOR UPDATE, which is
    still correct: claimers of the same types are serialised by the task-config row locks
    taken before it. SQLite ignores FOR UPDATE: there BEGIN IMMEDIATE already holds the
    write lock.
    """
    return (
        select(t, db_now())
        .where(
            t.c.status == TaskStatus.PENDING.value,
            # One type is the common case; = binds cheaper than an expanding IN.
            t.c.task_type == types[0] if len(types) == 1 else t.c.task_type.in_(list(types)),
            or_(t.c.scheduled_at.is_(None), t.c.scheduled_at <= func.current_timestamp()),
        )
        .order_by(t.c.priority.desc(), t.c.created_at, t.c.task_id)
        .limit(limit)
        .with_for_update(skip_locked=skip_locked)
    )


@lru_cache(maxsize=512)
def _claim_statement(types: tuple[str, ...], limit: int, skip_locked: bool) -> Select[Any]:
    """:func:`claim_statement`, built once per (types, limit, skip_locked)."""
    return claim_statement(types, limit, skip_locked=skip_locked)


def _free_slots(
    session: Connection, types: list[str] | None, *, lock: bool, keep_full: bool = False
) -> dict[str, int]:
    """Free running slots (max_concurrent less the running count) of each enabled type of
    ``types`` (None: every type); only types with a free slot unless ``keep_full``.

    With ``lock`` the task-config rows are locked first, in key order, so that two claimers
    never count the same free slot and never deadlock on each other. Only claims lock them.
    """
    if types is None:
        rows = session.execute(_LOCK_ENABLED_LIMITS if lock else _ENABLED_LIMITS)
    else:
        rows = session.execute(_LOCK_LIMITS_OF if lock else _LIMITS_OF, {"p_types": list(types)})
    max_running: dict[str, int] = {task_type: n for task_type, n in rows}
    if not max_running:
        return {}
    if len(max_running) == 1:
        [only] = max_running
        counted = session.execute(_RUNNING_OF_TYPE, {"p_type": only})
    else:
        counted = session.execute(_RUNNING_BY_TYPE, {"p_types": list(max_running)})
    running: dict[str, int] = dict(counted.all())
    free = {task_type: n - running.get(task_type, 0) for task_type, n in max_running.items()}
    return free if keep_full else {task_type: n for task_type, n in free.items() if n > 0}


def _pick(
    session: Connection, room: dict[str, int], wanted: int, skip_locked: bool
) -> tuple[list[dict[str, Any]], datetime | None]:
    """The rows of the first ``wanted`` runnable tasks in claim order, within each type's
    free slots, and the database's clock.

    A type that fills up is dropped from the query and the query runs again, so the pending
    tasks of a full type never hide the runnable tasks of other types behind them. Each
    round drops at least one type.
    """
    room = dict(room)
    chosen: list[dict[str, Any]] = []
    now: datetime | None = None
    while room and len(chosen) < wanted:
        query = _claim_statement(tuple(sorted(room)), wanted - len(chosen), skip_locked)
        batch = []
        for row in session.execute(query):
            values = dict(row._mapping)
            now = values.pop("db_now")
            batch.append(values)
        slots = dict(room)
        taken: list[dict[str, Any]] = []
        full: set[str] = set()
        for values in batch:
            task_type = values["task_type"]
            if slots[task_type] > 0:
                slots[task_type] -= 1
                taken.append(values)
            else:
                full.add(task_type)
        if not full:
            chosen.extend(taken)
            break
        # A full type's share is final; the other types' rows are read again next round.
        chosen.extend(values for values in taken if values["task_type"] in full)
        for task_type in full:
            del room[task_type]
    chosen.sort(key=lambda row: (-row["priority"], row["created_at"], row["task_id"]))
    return chosen, now


class _OverLimit(Exception):
    """A claim's own tasks would take a type past its max_concurrent: roll it back."""


class _WorkerAlive(Exception):
    """A worker thought dead sent a heartbeat before its task was taken back."""


def _new_task(request: TaskRequest, defaults: dict[str, Row[Any]], now: datetime) -> Task:
    config = defaults.get(request.task_type)
    if config is None:
        raise UnknownTaskTypeError(request.task_type)
    if not config.enabled:
        raise TaskTypeDisabledError(request.task_type)
    scheduled_at = request.scheduled_at
    if request.delay is not None:
        scheduled_at = (now + request.delay).replace(microsecond=0)  # TIMESTAMP: whole seconds
        if scheduled_at > limits.TIMESTAMP_MAX:
            raise ValidationError(
                "delay", f"must end by {limits.TIMESTAMP_MAX.isoformat()}", request.delay
            )
    # Checked again: the request is frozen, but a payload dict can change after it was made.
    check.json_document("payload", request.payload)
    # The rest of the request was validated when it was made, the config when it was stored.
    return restore(
        Task,
        {
            "task_type": request.task_type,
            "payload": request.payload,
            "task_id": request.task_id,
            "priority": request.priority,
            "status": TaskStatus.PENDING,
            "result": None,
            "error_message": None,
            "worker_id": None,
            "retry_count": 0,
            "max_retry": (
                config.default_max_retry if request.max_retry is None else request.max_retry
            ),
            "timeout": config.default_timeout if request.timeout is None else request.timeout,
            "created_at": now,
            "scheduled_at": scheduled_at,
            "started_at": None,
            "completed_at": None,
        },
    )


def _same_attempt(task: Task) -> ColumnElement[bool]:
    """Like _HELD_ATTEMPT, for a task that may have no worker (a pending one being cancelled)."""
    worker = t.c.worker_id.is_(None) if task.worker_id is None else t.c.worker_id == task.worker_id
    return (
        (t.c.task_id == task.task_id)
        & (t.c.status == task.status.value)
        & worker
        & (t.c.retry_count == task.retry_count)
    )


def _attempt_end_values(
    task: Task, reason: str, retry_at: datetime | None, now: datetime
) -> dict[str, Any]:
    """A failed or taken-back attempt: requeued for ``retry_at``, or failed when None."""
    if retry_at is None:
        return {"status": TaskStatus.FAILED.value, "error_message": reason, "completed_at": now}
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
        return _log(
            task.task_id,
            log_type,
            TaskStatus.RUNNING,
            TaskStatus.FAILED,
            message=reason,
            details={"worker_id": task.worker_id, "attempt": task.retry_count + 1},
        )
    return _log(
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


def _log(
    task_id: str,
    log_type: LogType,
    from_status: TaskStatus | None,
    to_status: TaskStatus,
    *,
    message: str | None = None,
    details: dict[str, Any] | None = None,
    created_at: datetime | None = None,
) -> TaskLog:
    """A log row of the queue's own making: its message was checked on the way in (or is
    the queue's), its details are the queue's, so TaskLog's checks are skipped."""
    return restore(
        TaskLog,
        {
            "task_id": task_id,
            "log_type": log_type,
            "from_status": from_status,
            "to_status": to_status,
            "message": message,
            "details": details,
            "log_id": new_id(),
            "created_at": created_at,
        },
    )


def _release_slot(uow: UnitOfWork, worker_id: str) -> None:
    uow.connection.execute(_RELEASE_SLOT, {"p_worker_id": worker_id})


def _set_worker_status(uow: UnitOfWork, worker_id: str, status: WorkerStatus) -> None:
    result = uow.connection.execute(
        update(w).where(w.c.worker_id == worker_id).values(status=status.value)
    )
    if result.rowcount != 1:
        raise NotFoundError("worker", worker_id)


def _mark_dead(uow: UnitOfWork, worker_id: str, dead_after: timedelta) -> bool:
    """Offline, if it is still silent by the database's clock (it may have just woken up)."""
    now = uow.connection.execute(select(db_now())).scalar_one()
    result = uow.connection.execute(
        update(w)
        .where(
            w.c.worker_id == worker_id,
            w.c.last_heartbeat < now - dead_after,
            w.c.status != WorkerStatus.OFFLINE.value,
        )
        .values(status=WorkerStatus.OFFLINE.value)
    )
    return bool(result.rowcount == 1)
