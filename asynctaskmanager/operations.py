"""Operator actions beyond the queue's own transitions: re-queue a task that ended.

The state machine has no way back from a final status: a worker never revives a task. An
operator may, deliberately: :func:`retry_task` puts a failed or cancelled task back to
pending with its attempts reset, in one guarded transaction that also writes the log row
saying so (log type ``retry_scheduled``, ``details.by = "operator"``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sqlalchemy import select, update

from asynctaskmanager.domain import validation as check
from asynctaskmanager.domain.enums import LogType, TaskStatus
from asynctaskmanager.domain.models import Task, TaskLog
from asynctaskmanager.errors import IllegalTransitionError, NotFoundError, StorageError
from asynctaskmanager.infrastructure.schema import task_table as t

if TYPE_CHECKING:
    from asynctaskmanager.infrastructure.unit_of_work import UnitOfWork
    from asynctaskmanager.storage import Storage

RETRYABLE_STATUSES = frozenset({TaskStatus.FAILED, TaskStatus.CANCELLED})


def retry_task(storage: Storage, task_id: str, reason: str | None = None) -> Task:
    """Re-queue a failed or cancelled task, due now, with ``retry_count`` back to 0.

    A pending, running or completed task raises IllegalTransitionError; a missing one
    NotFoundError. Returns the task as it now is.
    """
    check.identifier("task_id", task_id)
    check.long_text("reason", reason)

    def work(uow: UnitOfWork) -> Task:
        row = uow.connection.execute(
            select(t.c.status).where(t.c.task_id == task_id).with_for_update()
        ).first()
        if row is None:
            raise NotFoundError("task", task_id)
        status = TaskStatus(row.status)
        if status not in RETRYABLE_STATUSES:
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

    return storage.run(work)
