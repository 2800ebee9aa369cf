"""Enumerations stored as VARCHAR(32) (INT for priority) in the database."""

from __future__ import annotations

from enum import Enum, IntEnum


class TaskStatus(str, Enum):
    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def is_final(self) -> bool:
        return self in FINAL_STATUSES


# The statuses a task never leaves.
FINAL_STATUSES = frozenset({TaskStatus.COMPLETED, TaskStatus.FAILED, TaskStatus.CANCELLED})


class TaskPriority(IntEnum):
    """Higher runs first."""

    LOW = 0
    NORMAL = 1
    HIGH = 2
    CRITICAL = 3


class RetryStrategy(str, Enum):
    FIXED = "fixed"
    LINEAR = "linear"
    EXPONENTIAL = "exponential"


class ExecutorType(str, Enum):
    FUNCTION = "function"
    HTTP = "http"
    GRPC = "grpc"
    SCRIPT = "script"


class WorkerStatus(str, Enum):
    ONLINE = "online"
    DRAINING = "draining"
    OFFLINE = "offline"


class LogType(str, Enum):
    CREATED = "created"
    CLAIMED = "claimed"
    COMPLETED = "completed"
    FAILED = "failed"
    RETRY_SCHEDULED = "retry_scheduled"
    CANCELLED = "cancelled"
    RESCUED = "rescued"
    INFO = "info"
