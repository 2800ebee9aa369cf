"""The queue's pure rules: what a new task, an ended attempt and their log rows look like.

No storage here: the queue reads the database's clock and the type's config, and these
functions decide from them.
"""

from __future__ import annotations

import random
from datetime import datetime, timedelta
from typing import Any, Protocol

from asynctaskmanager.domain import limits
from asynctaskmanager.domain import validation as check
from asynctaskmanager.domain.enums import LogType, TaskStatus
from asynctaskmanager.domain.ids import new_id
from asynctaskmanager.domain.lifecycle import RetryPolicy
from asynctaskmanager.domain.models import Task, TaskConfig, TaskLog, restore
from asynctaskmanager.domain.requests import TaskRequest
from asynctaskmanager.errors import TaskTypeDisabledError, UnknownTaskTypeError, ValidationError

# A retry that would land after this cannot be stored (TIMESTAMP's range): the attempt then
# fails for good, with this said in its message.
RETRY_HORIZON = limits.TIMESTAMP_MAX


class TypeDefaults(Protocol):
    """What an enqueue needs of its type's config."""

    @property
    def enabled(self) -> bool: ...
    @property
    def default_timeout(self) -> int: ...
    @property
    def default_max_retry(self) -> int: ...


def new_task(
    request: TaskRequest,
    defaults: TypeDefaults | None,
    now: datetime,
    *,
    payload_checked: bool = False,
) -> Task:
    """The pending task ``request`` asks for, created at ``now`` (the database's clock).

    ``payload_checked``: the request was made within the caller's own call from a payload
    no one else held meanwhile, so its check at construction still holds."""
    if defaults is None:
        raise UnknownTaskTypeError(request.task_type)
    if not defaults.enabled:
        raise TaskTypeDisabledError(request.task_type)
    scheduled_at = request.scheduled_at
    if request.delay is not None:
        scheduled_at = (now + request.delay).replace(microsecond=0)  # TIMESTAMP: whole seconds
        if scheduled_at > limits.TIMESTAMP_MAX:
            raise ValidationError(
                "delay", f"must end by {limits.TIMESTAMP_MAX.isoformat()}", request.delay
            )
    if not payload_checked:
        # Checked again: the request is frozen, but a payload dict can change after it was
        # made.
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
                defaults.default_max_retry if request.max_retry is None else request.max_retry
            ),
            "timeout": defaults.default_timeout if request.timeout is None else request.timeout,
            "created_at": now,
            "scheduled_at": scheduled_at,
            "started_at": None,
            "completed_at": None,
        },
    )


def retry_at(
    task: Task,
    config: TaskConfig | None,
    now: datetime,
    *,
    max_delay: int,
    jitter: float,
    rng: random.Random | None = None,
) -> datetime | None:
    """When the failed attempt of ``task`` runs again, or None when it fails for good: no
    retry is left, or the back-off would land beyond :data:`RETRY_HORIZON`.

    A task whose type has lost its config is retried at once.
    """
    if task.retry_count >= task.max_retry:
        return None
    if config is None:
        return now
    policy = RetryPolicy(
        config.retry_strategy,
        config.retry_delay,
        config.backoff_rate,
        max_delay=max_delay,
        jitter=jitter,
    )
    delay = policy.delay_seconds(task.retry_count + 1, rng or random.Random())
    if delay > (RETRY_HORIZON - now).total_seconds():
        return None
    return now + timedelta(seconds=delay)


def attempt_end_values(
    task: Task, reason: str, retry: datetime | None, now: datetime
) -> dict[str, Any]:
    """The columns of a failed or taken-back attempt: requeued for ``retry``, or failed
    when None."""
    if retry is None:
        return {"status": TaskStatus.FAILED.value, "error_message": reason, "completed_at": now}
    return {
        "status": TaskStatus.PENDING.value,
        "retry_count": task.retry_count + 1,
        "scheduled_at": retry,
        "worker_id": None,
        "started_at": None,
        "error_message": reason,
    }


def attempt_log(task: Task, retry: datetime | None, reason: str, log_type: LogType) -> TaskLog:
    """The log row of a failed (``LogType.FAILED``) or rescued attempt."""
    details: dict[str, Any] = {"worker_id": task.worker_id, "attempt": task.retry_count + 1}
    if retry is None:
        return new_log(
            task.task_id,
            log_type,
            TaskStatus.RUNNING,
            TaskStatus.FAILED,
            message=reason,
            details=details,
        )
    return new_log(
        task.task_id,
        LogType.RETRY_SCHEDULED if log_type is LogType.FAILED else log_type,
        TaskStatus.RUNNING,
        TaskStatus.PENDING,
        message=reason,
        details=details | {"retry_at": retry.isoformat()},
    )


def is_overdue(task: Task, now: datetime, grace: timedelta) -> bool:
    """A running task past its own timeout plus ``grace``, by ``now`` (the database's clock)."""
    return (
        task.started_at is not None
        and task.started_at + timedelta(seconds=task.timeout) + grace < now
    )


def new_log(
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
