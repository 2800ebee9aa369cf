"""asynctaskmanager: the persistence layer of a distributed asynchronous task manager.

from asynctaskmanager import open_storage
storage = open_storage("memory")            # or a URL, a MySQLConfig, a PostgresConfig
"""

from asynctaskmanager.domain.enums import (
    ExecutorType,
    LogType,
    RetryStrategy,
    TaskPriority,
    TaskStatus,
    WorkerStatus,
)
from asynctaskmanager.domain.ids import new_id
from asynctaskmanager.domain.lifecycle import ALLOWED_TRANSITIONS, RetryPolicy, can_transition
from asynctaskmanager.domain.models import Task, TaskConfig, TaskLog, Worker
from asynctaskmanager.domain.repositories import (
    TaskConfigRepository,
    TaskFilter,
    TaskLogRepository,
    TaskOrder,
    TaskRepository,
    WorkerRepository,
)
from asynctaskmanager.domain.requests import TaskRequest
from asynctaskmanager.errors import (
    AsyncTaskManagerError,
    ConfigurationError,
    DuplicateError,
    IllegalTransitionError,
    NotFoundError,
    SchemaOutOfDateError,
    StorageError,
    TaskTypeDisabledError,
    TransientStorageError,
    UnknownTaskTypeError,
    ValidationError,
)
from asynctaskmanager.infrastructure.config import MySQLConfig, PostgresConfig
from asynctaskmanager.infrastructure.engine import DATABASE_URL_ENV
from asynctaskmanager.infrastructure.transactions import TransactionRetry
from asynctaskmanager.infrastructure.unit_of_work import UnitOfWork
from asynctaskmanager.queue import (
    CompletionAndClaim,
    CompletionsAndClaim,
    PruneReport,
    QueueSettings,
    SweepReport,
    TaskQueue,
    WorkWaiter,
)
from asynctaskmanager.storage import Storage, open_storage

__all__ = [
    "ALLOWED_TRANSITIONS",
    "DATABASE_URL_ENV",
    "AsyncTaskManagerError",
    "CompletionAndClaim",
    "CompletionsAndClaim",
    "ConfigurationError",
    "DuplicateError",
    "ExecutorType",
    "IllegalTransitionError",
    "LogType",
    "MySQLConfig",
    "NotFoundError",
    "PostgresConfig",
    "PruneReport",
    "QueueSettings",
    "RetryPolicy",
    "RetryStrategy",
    "SchemaOutOfDateError",
    "Storage",
    "StorageError",
    "SweepReport",
    "Task",
    "TaskConfig",
    "TaskConfigRepository",
    "TaskFilter",
    "TaskLog",
    "TaskLogRepository",
    "TaskOrder",
    "TaskPriority",
    "TaskQueue",
    "TaskRepository",
    "TaskRequest",
    "TaskStatus",
    "TaskTypeDisabledError",
    "TransactionRetry",
    "TransientStorageError",
    "UnitOfWork",
    "UnknownTaskTypeError",
    "ValidationError",
    "WorkWaiter",
    "Worker",
    "WorkerRepository",
    "WorkerStatus",
    "can_transition",
    "new_id",
    "open_storage",
]
