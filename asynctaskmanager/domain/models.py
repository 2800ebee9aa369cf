"""The four entities. Frozen dataclasses, validated and normalised on construction.

Change one with :func:`dataclasses.replace`, which validates again. :func:`restore` is the
one way round validation, for values that were validated before: rows the library wrote.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from datetime import datetime
from decimal import Decimal
from enum import Enum
from typing import Any, TypeVar

from asynctaskmanager.domain import limits
from asynctaskmanager.domain import validation as check
from asynctaskmanager.domain.enums import (
    ExecutorType,
    LogType,
    RetryStrategy,
    TaskPriority,
    TaskStatus,
    WorkerStatus,
)
from asynctaskmanager.domain.ids import new_id

# Frozen dataclasses normalise their own fields in __post_init__ through this.
set_field = object.__setattr__


@dataclass(frozen=True, slots=True)
class Task:
    task_type: str
    payload: Any = None
    task_id: str = field(default_factory=new_id)
    priority: TaskPriority = TaskPriority.NORMAL
    status: TaskStatus = TaskStatus.PENDING
    result: Any = None
    error_message: str | None = None
    worker_id: str | None = None
    retry_count: int = 0
    max_retry: int = 3
    timeout: int = 30
    created_at: datetime | None = None
    scheduled_at: datetime | None = None
    started_at: datetime | None = None
    completed_at: datetime | None = None

    def __post_init__(self) -> None:
        check.identifier("task_id", self.task_id)
        check.identifier("task_type", self.task_type)
        set_field(self, "priority", check.enum_member("priority", TaskPriority, self.priority))
        set_field(self, "status", check.enum_member("status", TaskStatus, self.status))
        check.json_document("payload", self.payload)
        check.json_document("result", self.result)
        check.long_text("error_message", self.error_message)
        check.optional_identifier("worker_id", self.worker_id)
        check.integer("retry_count", self.retry_count, 0)
        check.integer("max_retry", self.max_retry, 0)
        check.integer("timeout", self.timeout, 1)
        for name in ("created_at", "scheduled_at", "started_at", "completed_at"):
            value = getattr(self, name)
            if value is not None:
                set_field(self, name, check.timestamp(name, value))


@dataclass(frozen=True, slots=True)
class TaskConfig:
    task_type: str
    task_name: str
    executor_type: ExecutorType
    retry_strategy: RetryStrategy = RetryStrategy.EXPONENTIAL
    description: str | None = None
    executor_config: Any = None
    default_timeout: int = 30
    default_max_retry: int = 3
    retry_delay: int = 5
    backoff_rate: Decimal = Decimal("2.00")
    max_concurrent: int = 10
    enabled: bool = True
    created_at: datetime | None = None
    updated_at: datetime | None = None

    def __post_init__(self) -> None:
        check.identifier("task_type", self.task_type)
        check.text("task_name", self.task_name, limits.NAME_MAX, allow_empty=False)
        check.long_text("description", self.description)
        set_field(
            self,
            "executor_type",
            check.enum_member("executor_type", ExecutorType, self.executor_type),
        )
        check.json_document("executor_config", self.executor_config)
        check.integer("default_timeout", self.default_timeout, 1)
        check.integer("default_max_retry", self.default_max_retry, 0)
        set_field(
            self,
            "retry_strategy",
            check.enum_member("retry_strategy", RetryStrategy, self.retry_strategy),
        )
        check.integer("retry_delay", self.retry_delay, 0)
        set_field(
            self, "backoff_rate", check.decimal("backoff_rate", self.backoff_rate, Decimal("1.00"))
        )
        check.integer("max_concurrent", self.max_concurrent, 1)
        check.boolean("enabled", self.enabled)
        set_field(self, "created_at", check.optional_timestamp("created_at", self.created_at))
        set_field(self, "updated_at", check.optional_timestamp("updated_at", self.updated_at))


@dataclass(frozen=True, slots=True)
class TaskLog:
    task_id: str
    log_type: LogType
    from_status: TaskStatus | None = None
    to_status: TaskStatus | None = None
    message: str | None = None
    details: Any = None
    log_id: str = field(default_factory=new_id)
    created_at: datetime | None = None

    def __post_init__(self) -> None:
        check.identifier("log_id", self.log_id)
        check.identifier("task_id", self.task_id)
        set_field(self, "log_type", check.enum_member("log_type", LogType, self.log_type))
        set_field(
            self, "from_status", check.optional_enum("from_status", TaskStatus, self.from_status)
        )
        set_field(self, "to_status", check.optional_enum("to_status", TaskStatus, self.to_status))
        check.long_text("message", self.message)
        check.json_document("details", self.details)
        set_field(self, "created_at", check.optional_timestamp("created_at", self.created_at))


@dataclass(frozen=True, slots=True)
class Worker:
    """A worker process. ``supported_types`` None means every type; an empty list means none."""

    worker_id: str
    worker_name: str
    address: str
    status: WorkerStatus = WorkerStatus.ONLINE
    capacity: int = 10
    current_load: int = 0
    supported_types: list[str] | None = None
    last_heartbeat: datetime | None = None

    def __post_init__(self) -> None:
        check.identifier("worker_id", self.worker_id)
        check.text("worker_name", self.worker_name, limits.NAME_MAX, allow_empty=False)
        check.text("address", self.address, limits.ADDRESS_MAX, allow_empty=False)
        set_field(self, "status", check.enum_member("status", WorkerStatus, self.status))
        check.integer("capacity", self.capacity, 1)
        check.integer("current_load", self.current_load, 0)
        set_field(
            self,
            "supported_types",
            check.string_list("supported_types", self.supported_types, check.identifier),
        )
        set_field(
            self, "last_heartbeat", check.optional_timestamp("last_heartbeat", self.last_heartbeat)
        )


E = TypeVar("E", Task, TaskConfig, TaskLog, Worker)


# The fields that __post_init__ turns from stored values ('pending', 1) into enum members.
_ENUM_FIELDS: dict[type[Any], tuple[tuple[str, type[Enum]], ...]] = {
    Task: (("priority", TaskPriority), ("status", TaskStatus)),
    TaskConfig: (("executor_type", ExecutorType), ("retry_strategy", RetryStrategy)),
    TaskLog: (("log_type", LogType), ("from_status", TaskStatus), ("to_status", TaskStatus)),
    Worker: (("status", WorkerStatus),),
}
_FIELD_COUNT = {kind: len(fields(kind)) for kind in _ENUM_FIELDS}


def restore(kind: type[E], values: dict[str, Any]) -> E:
    """An entity from values validated when they were written: a stored row, or a request
    already checked. Every field must be given; only enum values are normalised.

    Validating again would cost more than reading the row: a claim would check each task's
    payload (a JSON encoding) twice on its way out. Use the constructor for anything a
    caller handed in.
    """
    if len(values) != _FIELD_COUNT[kind]:
        raise TypeError(f"restore({kind.__name__}) needs every field, got {sorted(values)}")
    entity = object.__new__(kind)
    for name, value in values.items():
        set_field(entity, name, value)
    for name, enum in _ENUM_FIELDS[kind]:
        value = values[name]
        if value is not None and type(value) is not enum:
            set_field(entity, name, enum(value))
    return entity
