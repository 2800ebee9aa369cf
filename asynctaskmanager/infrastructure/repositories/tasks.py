"""Tasks: CRUD and filtered listings."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import ColumnElement, func, select

from asynctaskmanager.domain import validation as check
from asynctaskmanager.domain.enums import TaskStatus
from asynctaskmanager.domain.models import Task, restore
from asynctaskmanager.domain.repositories import TaskFilter, TaskOrder
from asynctaskmanager.errors import ValidationError
from asynctaskmanager.infrastructure.expressions import nulls_low
from asynctaskmanager.infrastructure.repositories.table import TableRepository, page, reads
from asynctaskmanager.infrastructure.schema import task_table as t

ALL_TASKS = TaskFilter()

_ORDER_COLUMNS = {order: t.c[order.value] for order in TaskOrder}
# Every column but created_at, which the database fills in when a task has none.
_COLUMNS = (
    "task_id",
    "task_type",
    "priority",
    "status",
    "payload",
    "result",
    "error_message",
    "worker_id",
    "retry_count",
    "max_retry",
    "timeout",
    "scheduled_at",
    "started_at",
    "completed_at",
)


def task_values(task: Task) -> tuple[Any, ...]:
    """The row of ``task`` in _COLUMNS order."""
    return (
        task.task_id,
        task.task_type,
        int(task.priority),
        task.status.value,
        task.payload,
        task.result,
        task.error_message,
        task.worker_id,
        task.retry_count,
        task.max_retry,
        task.timeout,
        task.scheduled_at,
        task.started_at,
        task.completed_at,
    )


def row_to_task(row: Any) -> Task:
    return restore(Task, dict(row._mapping))


class SqlTaskRepository(TableRepository[Task]):
    entity = "task"
    argument = "task"
    kind = Task
    table = t
    key = "task_id"
    columns = _COLUMNS

    def values(self, item: Task) -> tuple[Any, ...]:
        return task_values(item)

    @reads
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
        ordered = column.desc() if check.boolean("descending", descending) else column.asc()
        direction = nulls_low(ordered) if column.nullable else ordered
        # task_id last makes the order total, so that pages never overlap or skip.
        tie = t.c.task_id.desc() if descending else t.c.task_id.asc()
        query = (
            select(t)
            .where(*_conditions(where))
            .order_by(direction, tie)
            .limit(limit)
            .offset(offset)
        )
        return [self.from_row(row) for row in self._execute(query)]

    @reads
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
