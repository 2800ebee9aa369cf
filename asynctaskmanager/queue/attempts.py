"""The guarded SQL that ends an attempt: complete, fail, rescue, cancel.

Each applies only while the worker still holds the attempt it names (:data:`HELD_ATTEMPT`),
frees the worker's slot in the same transaction, and writes the transition's log row. Task
rows are locked before worker rows, as everywhere but in a claim (see ``claim.py``).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Executable, bindparam, case, select, update

from asynctaskmanager.domain.attempts import attempt_end_values, attempt_log, new_log, retry_at
from asynctaskmanager.domain.enums import LogType, TaskStatus, WorkerStatus
from asynctaskmanager.domain.lifecycle import ensure_transition
from asynctaskmanager.domain.models import Task, TaskConfig, TaskLog
from asynctaskmanager.errors import IllegalTransitionError, NotFoundError, StorageError
from asynctaskmanager.infrastructure.expressions import db_now
from asynctaskmanager.infrastructure.repositories.task_configs import row_to_config
from asynctaskmanager.infrastructure.repositories.tasks import row_to_task
from asynctaskmanager.infrastructure.schema import task_config_table as cfg
from asynctaskmanager.infrastructure.schema import task_table as t
from asynctaskmanager.infrastructure.schema import worker_table as w
from asynctaskmanager.infrastructure.unit_of_work import UnitOfWork
from asynctaskmanager.queue.settings import QueueSettings

# The statuses an operator may re-queue from (the state machine itself has no way back).
REQUEUEABLE_STATUSES = frozenset({TaskStatus.FAILED, TaskStatus.CANCELLED})

_RELEASE_SLOT = (
    update(w)
    .where(w.c.worker_id == bindparam("p_worker_id"), w.c.current_load > 0)
    .values(current_load=w.c.current_load - 1)
)
# The attempt a worker holds: this task, in this state, held by this worker, in this attempt.
# retry_count grows on every requeue, so a task rescued and claimed again (even by the same
# worker) no longer matches an older attempt. Parameters come from end_attempt.
HELD_ATTEMPT = (
    (t.c.task_id == bindparam("p_task_id"))
    & (t.c.status == bindparam("p_status"))
    & (t.c.worker_id == bindparam("p_worker_id"))
    & (t.c.retry_count == bindparam("p_retry_count"))
)
_COMPLETE = (
    update(t)
    .where(HELD_ATTEMPT)
    .values(
        status=TaskStatus.COMPLETED.value,
        result=bindparam("p_result", type_=t.c.result.type),
        completed_at=db_now(),
    )
)


# A batch's rows, locked in key order before any is changed (task rows first, as everywhere).
_LOCK_ATTEMPTS = (
    select(t.c.task_id, t.c.status, t.c.worker_id, t.c.retry_count)
    .where(t.c.task_id.in_(bindparam("p_task_ids", expanding=True)))
    .order_by(t.c.task_id)
    .with_for_update()
)
# The held ones of a batch, completed with one result (the common case: built once; results
# that differ take a CASE built per call).
_COMPLETE_HELD = (
    update(t)
    .where(t.c.task_id.in_(bindparam("p_task_ids", expanding=True)))
    .values(
        status=TaskStatus.COMPLETED.value,
        result=bindparam("p_result", type_=t.c.result.type),
        completed_at=db_now(),
    )
)
_RELEASE_SLOTS = (
    update(w)
    .where(w.c.worker_id == bindparam("p_worker_id"))
    .values(
        current_load=case(
            (w.c.current_load >= bindparam("p_count"), w.c.current_load - bindparam("p_count")),
            else_=0,
        )
    )
)


class WorkerAlive(Exception):
    """A worker thought dead sent a heartbeat before its task was taken back."""


def complete_attempt(uow: UnitOfWork, task: Task, result: Any) -> bool:
    if not end_attempt(uow, task, _COMPLETE, {"p_result": result}):
        return False
    uow.task_logs.create(
        new_log(task.task_id, LogType.COMPLETED, TaskStatus.RUNNING, TaskStatus.COMPLETED)
    )
    return True


def complete_attempts(uow: UnitOfWork, items: Sequence[tuple[Task, Any]]) -> list[bool]:
    """Complete many attempts in one transaction, each only while its worker still holds it:
    one statement locks the batch's rows, one marks the held ones completed, one per worker
    frees the slots, one inserts the log rows. Returns, per item, whether it applied."""
    ids = sorted(task.task_id for task, _ in items)
    current = {
        row.task_id: row for row in uow.connection.execute(_LOCK_ATTEMPTS, {"p_task_ids": ids})
    }
    applies = [_still_held(current.get(task.task_id), task) for task, _ in items]
    held = [(task, result) for (task, result), ok in zip(items, applies, strict=True) if ok]
    if not held:
        return applies
    results = {task.task_id: result for task, result in held}
    if len({repr(result) for result in results.values()}) == 1:
        uow.connection.execute(
            _COMPLETE_HELD,
            {"p_task_ids": list(results), "p_result": next(iter(results.values()))},
        )
    else:
        result_value = case(
            {
                task_id: bindparam(f"p_result_{index}", result, type_=t.c.result.type)
                for index, (task_id, result) in enumerate(results.items())
            },
            value=t.c.task_id,
        )
        uow.connection.execute(
            update(t)
            .where(t.c.task_id.in_(list(results)))
            .values(status=TaskStatus.COMPLETED.value, result=result_value, completed_at=db_now())
        )
    for worker_id, count in sorted(Counter(task.worker_id for task, _ in held).items()):
        uow.connection.execute(_RELEASE_SLOTS, {"p_worker_id": worker_id, "p_count": count})
    uow.task_logs.create_many(
        (
            new_log(task.task_id, LogType.COMPLETED, TaskStatus.RUNNING, TaskStatus.COMPLETED)
            for task, _ in held
        ),
        savepoint=False,
    )
    return applies


def fail_attempts(
    uow: UnitOfWork, items: Sequence[tuple[Task, str]], *, retry: bool, settings: QueueSettings
) -> list[bool]:
    """fail_attempt for each ``(task, message)``, in key order as complete_attempts locks."""
    applied = [False] * len(items)
    for index in sorted(range(len(items)), key=lambda index: items[index][0].task_id):
        task, message = items[index]
        applied[index] = fail_attempt(uow, task, message, retry=retry, settings=settings)
    return applied


def _still_held(row: Any, task: Task) -> bool:
    """Whether the locked ``row`` is still the attempt ``task`` names (see HELD_ATTEMPT)."""
    return (
        row is not None
        and row.status == task.status.value
        and row.worker_id == task.worker_id
        and row.retry_count == task.retry_count
    )


def fail_attempt(
    uow: UnitOfWork, task: Task, message: str, *, retry: bool, settings: QueueSettings
) -> bool:
    config, now = config_and_now(uow, task.task_type)
    when = _retry_at(task, config, now, settings) if retry else None
    values = attempt_end_values(task, message, when, now)
    if not end_attempt(uow, task, update(t).where(HELD_ATTEMPT).values(values)):
        return False
    uow.task_logs.create(attempt_log(task, when, message, LogType.FAILED))
    return True


def rescue_attempt(
    uow: UnitOfWork,
    task: Task,
    reason: str,
    settings: QueueSettings,
    silent_for: timedelta | None = None,
) -> TaskStatus | None:
    """Take one attempt back from its worker: requeue it as a retry, or fail it.

    With ``silent_for``, only if the worker's last heartbeat is still older than that by
    the database's clock; else :class:`WorkerAlive` rolls the transaction back. The check
    locks the worker row after the task row, so a heartbeat either comes first (and the
    task stays) or waits and then no longer lists the task.
    """
    config, now = config_and_now(uow, task.task_type)
    when = _retry_at(task, config, now, settings)
    values = attempt_end_values(task, reason, when, now)
    if not end_attempt(uow, task, update(t).where(HELD_ATTEMPT).values(values)):
        return None
    if silent_for is not None and task.worker_id is not None:
        still_silent = uow.connection.execute(
            update(w)
            .where(w.c.worker_id == task.worker_id, w.c.last_heartbeat < now - silent_for)
            .values(status=WorkerStatus.OFFLINE.value)
        )
        if still_silent.rowcount != 1:
            raise WorkerAlive(task.worker_id)
    uow.task_logs.create(attempt_log(task, when, reason, LogType.RESCUED))
    return TaskStatus.FAILED if when is None else TaskStatus.PENDING


def cancel_task(uow: UnitOfWork, task_id: str, reason: str | None) -> bool:
    """Cancel a pending or running task; False when it changed under us."""
    # Locked, so that a claim or a completion cannot slip in between the check and the
    # update (task row before worker row, as everywhere).
    row = uow.connection.execute(select(t).where(t.c.task_id == task_id).with_for_update()).first()
    if row is None:
        raise NotFoundError("task", task_id)
    task = row_to_task(row)
    ensure_transition(task_id, task.status, TaskStatus.CANCELLED)
    result = uow.connection.execute(
        update(t)
        .where(_same_attempt(task))
        .values(status=TaskStatus.CANCELLED.value, completed_at=db_now(), error_message=reason)
    )
    if result.rowcount != 1:
        return False
    if task.status is TaskStatus.RUNNING and task.worker_id is not None:
        release_slot(uow, task.worker_id)
    uow.task_logs.create(
        new_log(task_id, LogType.CANCELLED, task.status, TaskStatus.CANCELLED, message=reason)
    )
    return True


def end_attempt(
    uow: UnitOfWork, task: Task, statement: Executable, params: dict[str, Any] | None = None
) -> bool:
    """Run ``statement`` (guarded by :data:`HELD_ATTEMPT`) and, if it still matched
    ``task``'s attempt, free the worker's slot."""
    assert task.worker_id is not None  # a claimed task, or a running one found by a sweep
    held = {
        "p_task_id": task.task_id,
        "p_status": task.status.value,
        "p_worker_id": task.worker_id,
        "p_retry_count": task.retry_count,
    }
    if uow.connection.execute(statement, held | (params or {})).rowcount != 1:
        return False
    release_slot(uow, task.worker_id)
    return True


def release_slot(uow: UnitOfWork, worker_id: str) -> None:
    uow.connection.execute(_RELEASE_SLOT, {"p_worker_id": worker_id})


def config_and_now(uow: UnitOfWork, task_type: str) -> tuple[TaskConfig | None, datetime]:
    row = uow.connection.execute(select(cfg, db_now()).where(cfg.c.task_type == task_type)).first()
    if row is None:
        return None, uow.connection.execute(select(db_now())).scalar_one()
    return row_to_config(row), row[-1]


def _retry_at(
    task: Task, config: TaskConfig | None, now: datetime, settings: QueueSettings
) -> datetime | None:
    return retry_at(
        task, config, now, max_delay=settings.max_retry_delay, jitter=settings.retry_jitter
    )


def _same_attempt(task: Task) -> ColumnElement[bool]:
    """Like HELD_ATTEMPT, for a task that may have no worker (a pending one being cancelled)."""
    worker = t.c.worker_id.is_(None) if task.worker_id is None else t.c.worker_id == task.worker_id
    return (
        (t.c.task_id == task.task_id)
        & (t.c.status == task.status.value)
        & worker
        & (t.c.retry_count == task.retry_count)
    )


def requeue_task(uow: UnitOfWork, task_id: str, reason: str | None) -> Task:
    """An operator's re-queue of a failed or cancelled task: due now, attempts reset, and a
    ``retry_scheduled`` log row with ``details.by = "operator"``."""
    row = uow.connection.execute(
        select(t.c.status).where(t.c.task_id == task_id).with_for_update()
    ).first()
    if row is None:
        raise NotFoundError("task", task_id)
    status = TaskStatus(row.status)
    if status not in REQUEUEABLE_STATUSES:
        raise IllegalTransitionError(task_id, status.value, TaskStatus.PENDING.value)
    changed = uow.connection.execute(
        update(t)
        .where(t.c.task_id == task_id, t.c.status == status.value)
        .values(
            status=TaskStatus.PENDING.value,
            retry_count=0,
            worker_id=None,
            started_at=None,
            completed_at=None,
            scheduled_at=None,
            result=None,
        )
    ).rowcount
    if changed != 1:  # the row is locked above: only a broken guard gets here
        raise StorageError(f"task {task_id!r} changed while being re-queued")
    uow.task_logs.create(
        TaskLog(
            task_id,
            LogType.RETRY_SCHEDULED,
            status,
            TaskStatus.PENDING,
            message=reason or "re-queued by an operator",
            details={"by": "operator"},
        )
    )
    return uow.tasks.get(task_id)
