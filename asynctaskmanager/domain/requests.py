"""What a caller asks for when enqueueing: a task whose defaults come from its type's config."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from asynctaskmanager.domain import limits
from asynctaskmanager.domain import validation as check
from asynctaskmanager.domain.enums import TaskPriority
from asynctaskmanager.domain.ids import new_id
from asynctaskmanager.domain.models import set_field
from asynctaskmanager.errors import ValidationError

# No delay can land inside TIMESTAMP's range if it is longer than the range itself.
MAX_DELAY = limits.TIMESTAMP_MAX - limits.TIMESTAMP_MIN


@dataclass(frozen=True, slots=True)
class TaskRequest:
    """``timeout`` and ``max_retry`` left as None come from the type's TaskConfig.

    Give ``scheduled_at`` (an instant) or ``delay`` (from the database's clock), not both.
    """

    task_type: str
    payload: Any = None
    priority: TaskPriority = TaskPriority.NORMAL
    timeout: int | None = None
    max_retry: int | None = None
    scheduled_at: datetime | None = None
    delay: timedelta | None = None
    task_id: str = field(default_factory=new_id)

    def __post_init__(self) -> None:
        check.identifier("task_id", self.task_id)
        check.identifier("task_type", self.task_type)
        set_field(self, "priority", check.enum_member("priority", TaskPriority, self.priority))
        check.json_document("payload", self.payload)
        if self.timeout is not None:
            check.integer("timeout", self.timeout, 1)
        if self.max_retry is not None:
            check.integer("max_retry", self.max_retry, 0)
        set_field(self, "scheduled_at", check.optional_timestamp("scheduled_at", self.scheduled_at))
        if self.delay is not None:
            if not isinstance(self.delay, timedelta) or not timedelta(0) <= self.delay <= MAX_DELAY:
                raise ValidationError(
                    "delay", f"must be a timedelta between 0 and {MAX_DELAY.days} days", self.delay
                )
            if self.scheduled_at is not None:
                raise ValidationError("delay", "give scheduled_at or delay, not both", self.delay)
