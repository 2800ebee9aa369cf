"""The repository interfaces. Infrastructure implements them; the domain only names them.

Each method is one unit of work when called on ``Storage.tasks`` and friends, and joins the
surrounding transaction when called on a :class:`UnitOfWork`'s repositories. Every
repository has the same create, create_many, find, get, update and delete, keyed on its
table's primary key; the rest are its own queries. ``create_many`` inserts all or none (see
the SQL implementation for ``savepoint``) and returns how many it inserted.
"""

from __future__ import annotations

import builtins
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from typing import Protocol, TypeVar

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


E = TypeVar("E")


class Repository(Protocol[E]):
    """What every repository has, keyed on its table's primary key."""

    def create(self, item: E) -> None: ...
    def create_many(self, items: Iterable[E], *, savepoint: bool = ...) -> int: ...
    def get(self, key: str) -> E: ...
    def find(self, key: str) -> E | None: ...
    def update(self, item: E) -> None: ...
    def delete(self, key: str) -> None: ...


class TaskRepository(Repository[Task], Protocol):
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


class TaskConfigRepository(Repository[TaskConfig], Protocol):
    def list(
        self, *, enabled: bool | None = ..., limit: int = ..., offset: int = ...
    ) -> list[TaskConfig]: ...
    def list_enabled(self) -> builtins.list[TaskConfig]: ...
    def count(self, *, enabled: bool | None = ...) -> int: ...


class TaskLogRepository(Repository[TaskLog], Protocol):
    def list_for_task(
        self, task_id: str, *, limit: int = ..., offset: int = ...
    ) -> list[TaskLog]: ...
    def count_for_task(self, task_id: str) -> int: ...


class WorkerRepository(Repository[Worker], Protocol):
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
