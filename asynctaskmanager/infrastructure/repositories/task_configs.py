"""Task configurations, one per task type."""

from __future__ import annotations

import builtins
from typing import Any

from sqlalchemy import ColumnElement, func, select

from asynctaskmanager.domain import validation as check
from asynctaskmanager.domain.models import TaskConfig, restore
from asynctaskmanager.infrastructure.repositories.table import TableRepository, page, reads
from asynctaskmanager.infrastructure.schema import task_config_table as c

# Every column but the two the database keeps: created_at (filled in when a config has none)
# and updated_at (ON UPDATE, or a trigger on SQLite).
_COLUMNS = (
    "task_type",
    "task_name",
    "description",
    "executor_type",
    "executor_config",
    "default_timeout",
    "default_max_retry",
    "retry_strategy",
    "retry_delay",
    "backoff_rate",
    "max_concurrent",
    "enabled",
)


def row_to_config(row: Any) -> TaskConfig:
    values = dict(row._mapping)
    values.pop("db_now", None)  # the queue reads the clock in the same statement
    values.pop("claim_seq", None)  # the claims' counter on a cluster, not a config field
    values["enabled"] = bool(values["enabled"])
    return restore(TaskConfig, values)


class SqlTaskConfigRepository(TableRepository[TaskConfig]):
    entity = "task_config"
    argument = "config"
    kind = TaskConfig
    table = c
    key = "task_type"
    columns = _COLUMNS
    database_owned = frozenset({"created_at", "updated_at"})

    def values(self, item: TaskConfig) -> tuple[Any, ...]:
        return (
            item.task_type,
            item.task_name,
            item.description,
            item.executor_type.value,
            item.executor_config,
            item.default_timeout,
            item.default_max_retry,
            item.retry_strategy.value,
            item.retry_delay,
            item.backoff_rate,
            item.max_concurrent,
            item.enabled,
        )

    def from_row(self, row: Any) -> TaskConfig:
        return row_to_config(row)

    @reads
    def list(
        self, *, enabled: bool | None = None, limit: int = 100, offset: int = 0
    ) -> list[TaskConfig]:
        limit, offset = page(limit, offset)
        query = (
            select(c).where(*_enabled(enabled)).order_by(c.c.task_type).limit(limit).offset(offset)
        )
        return [row_to_config(row) for row in self._execute(query)]

    @reads
    def list_enabled(self) -> builtins.list[TaskConfig]:  # `list` is the method above
        query = select(c).where(*_enabled(True)).order_by(c.c.task_type)
        return [row_to_config(row) for row in self._execute(query)]

    @reads
    def count(self, *, enabled: bool | None = None) -> int:
        query = select(func.count()).select_from(c).where(*_enabled(enabled))
        return int(self._execute(query).scalar_one())


def _enabled(enabled: bool | None) -> list[ColumnElement[bool]]:
    if enabled is None:
        return []
    return [c.c.enabled == check.boolean("enabled", enabled)]
