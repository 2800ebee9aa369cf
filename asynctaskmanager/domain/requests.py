"""What a caller asks for when enqueueing: a task whose defaults come from its type's config."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from asynctaskmanager.domain import validation as check
from asynctaskmanager.domain.enums import TaskPriority
from asynctaskmanager.domain.ids import new_id
from asynctaskmanager.errors import ValidationError

_set = object.__setattr__


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
        _set(self, "priority", check.enum_member("priority", TaskPriority, self.priority))
        check.json_document("payload", self.payload)
        if self.timeout is not None:
            check.integer("timeout", self.timeout, 1)
        if self.max_retry is not None:
            check.integer("max_retry", self.max_retry, 0)
        _set(self, "scheduled_at", check.optional_timestamp("scheduled_at", self.scheduled_at))
        if self.delay is not None:
            if not isinstance(self.delay, timedelta) or self.delay < timedelta(0):
                raise ValidationError("delay", "must be a timedelta of at least 0", self.delay)
            if self.scheduled_at is not None:
                raise ValidationError("delay", "give scheduled_at or delay, not both", self.delay)
