"""Tasks: CRUD and filtered listings."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import ColumnElement, bindparam, delete, func, insert, select, update

from asynctaskmanager.domain import validation as check
from asynctaskmanager.domain.enums import TaskStatus
from asynctaskmanager.domain.models import Task
from asynctaskmanager.domain.repositories import TaskFilter, TaskOrder
from asynctaskmanager.errors import NotFoundError, ValidationError
from asynctaskmanager.infrastructure.repositories._base import SqlRepository, entity, page
from asynctaskmanager.infrastructure.schema import task_table as t

INSERT_BATCH = 1000
ALL_TASKS = TaskFilter()

_ORDER_COLUMNS = {order: t.c[order.value] for order in TaskOrder}
# Built once: building a statement and its cache key costs more than a primary-key lookup.
_INSERT = insert(t)
_FIND = select(t).where(t.c.task_id == bindparam("p_task_id"))


def task_to_row(task: Task) -> dict[str, Any]:
    row = {
        "task_id": task.task_id,
        "task_type": task.task_type,
        "priority": int(task.priority),
        "status": task.status.value,
        "payload": task.payload,
        "result": task.result,
        "error_message": task.error_message,
        "worker_id": task.worker_id,
        "retry_count": task.retry_count,
        "max_retry": task.max_retry,
        "timeout": task.timeout,
        "scheduled_at": task.scheduled_at,
        "started_at": task.started_at,
        "completed_at": task.completed_at,
    }
    if task.created_at is not None:
        row["created_at"] = task.created_at
    return row


def row_to_task(row: Any) -> Task:
    return Task(**row._mapping)


class SqlTaskRepository(SqlRepository):
    entity = "task"

    def create(self, task: Task) -> None:
        entity("task", task, Task)
        self._execute(_INSERT, task_to_row(task), key=task.task_id)

    def create_many(self, tasks: Iterable[Task]) -> int:
        """Insert in batches of executemany; returns how many were inserted."""
        total = 0
        batch: list[dict[str, Any]] = []
        with_created: list[dict[str, Any]] = []
        for index, task in enumerate(tasks):
            row = task_to_row(entity(f"tasks[{index}]", task, Task))
            # executemany needs one column set per statement.
            (with_created if "created_at" in row else batch).append(row)
            if len(batch) >= INSERT_BATCH:
                total += self._insert_batch(batch)
                batch = []
            if len(with_created) >= INSERT_BATCH:
                total += self._insert_batch(with_created)
                with_created = []
        return total + self._insert_batch(batch) + self._insert_batch(with_created)

    def _insert_batch(self, rows: list[dict[str, Any]]) -> int:
        if rows:
            self._execute(_INSERT, rows)
        return len(rows)

    def find(self, task_id: str) -> Task | None:
        check.identifier("task_id", task_id)
        row = self._execute(_FIND, {"p_task_id": task_id}).first()
        return None if row is None else row_to_task(row)

    def get(self, task_id: str) -> Task:
        task = self.find(task_id)
        if task is None:
            raise NotFoundError(self.entity, task_id)
        return task

    def update(self, task: Task) -> None:
        entity("task", task, Task)
        row = task_to_row(task)
        del row["task_id"]
        row.pop("created_at", None)  # the creation instant never changes
        result = self._execute(
            update(t).where(t.c.task_id == task.task_id).values(row), key=task.task_id
        )
        self._require_one(result, task.task_id)

    def delete(self, task_id: str) -> None:
        check.identifier("task_id", task_id)
        self._require_one(self._execute(delete(t).where(t.c.task_id == task_id)), task_id)

    def list(
        self,
        where: TaskFilter = ALL_TASKS,
        *,
        limit: int = 100,
        offset: int = 0,
        order_by: TaskOrder | str = TaskOrder.CREATED_AT,
        descending: bool = False,
    ) -> list[Task]:
        limit, offset = page(limit, offset)
        order = check.enum_member("order_by", TaskOrder, order_by)
        column = _ORDER_COLUMNS[order]
        direction = column.desc() if check.boolean("descending", descending) else column.asc()
        # task_id last makes the order total, so that pages never overlap or skip.
        tie = t.c.task_id.desc() if descending else t.c.task_id.asc()
        query = (
            select(t)
            .where(*_conditions(where))
            .order_by(direction, tie)
            .limit(limit)
            .offset(offset)
        )
        return [row_to_task(row) for row in self._execute(query)]

    def count(self, where: TaskFilter = ALL_TASKS) -> int:
        query = select(func.count()).select_from(t).where(*_conditions(where))
        return int(self._execute(query).scalar_one())


def _conditions(where: TaskFilter) -> list[ColumnElement[bool]]:
    if not isinstance(where, TaskFilter):
        raise ValidationError("where", "must be a TaskFilter", where)
    conditions: list[ColumnElement[bool]] = []
    if where.status is not None:
        statuses = _statuses(where.status)
        conditions.append(t.c.status.in_([s.value for s in statuses]))
    if where.task_type is not None:
        conditions.append(t.c.task_type == check.identifier("task_type", where.task_type))
    if where.worker_id is not None:
        conditions.append(t.c.worker_id == check.identifier("worker_id", where.worker_id))
    if where.created_from is not None:
        conditions.append(t.c.created_at >= check.timestamp("created_from", where.created_from))
    if where.created_to is not None:
        conditions.append(t.c.created_at < check.timestamp("created_to", where.created_to))
    return conditions


def _statuses(value: TaskStatus | Sequence[TaskStatus] | str) -> list[TaskStatus]:
    if isinstance(value, (TaskStatus, str)):
        return [check.enum_member("status", TaskStatus, value)]
    if not isinstance(value, (list, tuple, set, frozenset)) or not value:
        raise ValidationError("status", "a TaskStatus or a non-empty list of them", value)
    return [check.enum_member("status", TaskStatus, item) for item in value]
