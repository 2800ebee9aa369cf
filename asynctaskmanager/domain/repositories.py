"""The repository interfaces. Infrastructure implements them; the domain only names them.

Each method is one unit of work when called on ``Storage.tasks`` and friends, and joins the
surrounding transaction when called on a :class:`UnitOfWork`'s repositories.
"""

from __future__ import annotations

import builtins
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from typing import Protocol

from asynctaskmanager.domain.enums import TaskStatus, WorkerStatus
from asynctaskmanager.domain.models import Task, TaskConfig, TaskLog, Worker


class TaskOrder(str, Enum):
    """The columns a task listing may be ordered by; nothing else is accepted."""

    CREATED_AT = "created_at"
    PRIORITY = "priority"
    SCHEDULED_AT = "scheduled_at"
    STARTED_AT = "started_at"
    COMPLETED_AT = "completed_at"
    TASK_ID = "task_id"


@dataclass(frozen=True, slots=True)
class TaskFilter:
    """Which tasks a listing returns. Unset fields do not filter.

    ``created_from`` is inclusive and ``created_to`` exclusive.
    """

    status: TaskStatus | Sequence[TaskStatus] | None = None
    task_type: str | None = None
    worker_id: str | None = None
    created_from: datetime | None = None
    created_to: datetime | None = None


class TaskRepository(Protocol):
    def create(self, task: Task) -> None: ...
    def create_many(self, tasks: Iterable[Task]) -> int: ...
    def get(self, task_id: str) -> Task: ...
    def find(self, task_id: str) -> Task | None: ...
    def update(self, task: Task) -> None: ...
    def delete(self, task_id: str) -> None: ...
    def list(
        self,
        where: TaskFilter = ...,
        *,
        limit: int = ...,
        offset: int = ...,
        order_by: TaskOrder | str = ...,
        descending: bool = ...,
    ) -> list[Task]: ...
    def count(self, where: TaskFilter = ...) -> int: ...


class TaskConfigRepository(Protocol):
    def create(self, config: TaskConfig) -> None: ...
    def get(self, task_type: str) -> TaskConfig: ...
    def find(self, task_type: str) -> TaskConfig | None: ...
    def update(self, config: TaskConfig) -> None: ...
    def delete(self, task_type: str) -> None: ...
    def list(
        self, *, enabled: bool | None = ..., limit: int = ..., offset: int = ...
    ) -> list[TaskConfig]: ...
    def list_enabled(self) -> builtins.list[TaskConfig]: ...
    def count(self, *, enabled: bool | None = ...) -> int: ...


class TaskLogRepository(Protocol):
    def create(self, log: TaskLog) -> None: ...
    def get(self, log_id: str) -> TaskLog: ...
    def update(self, log: TaskLog) -> None: ...
    def delete(self, log_id: str) -> None: ...
    def list_for_task(
        self, task_id: str, *, limit: int = ..., offset: int = ...
    ) -> list[TaskLog]: ...
    def count_for_task(self, task_id: str) -> int: ...


class WorkerRepository(Protocol):
    def create(self, worker: Worker) -> None: ...
    def get(self, worker_id: str) -> Worker: ...
    def find(self, worker_id: str) -> Worker | None: ...
    def update(self, worker: Worker) -> None: ...
    def delete(self, worker_id: str) -> None: ...
    def list(
        self,
        *,
        status: WorkerStatus | None = ...,
        heartbeat_before: datetime | None = ...,
        heartbeat_after: datetime | None = ...,
        limit: int = ...,
        offset: int = ...,
    ) -> list[Worker]: ...
    def count(
        self,
        *,
        status: WorkerStatus | None = ...,
        heartbeat_before: datetime | None = ...,
        heartbeat_after: datetime | None = ...,
    ) -> int: ...
