"""Task configurations, one per task type."""

from __future__ import annotations

import builtins
from typing import Any

from sqlalchemy import ColumnElement, delete, func, insert, select, update

from asynctaskmanager.domain import validation as check
from asynctaskmanager.domain.models import TaskConfig, restore
from asynctaskmanager.errors import NotFoundError
from asynctaskmanager.infrastructure.repositories._base import SqlRepository, entity, page
from asynctaskmanager.infrastructure.schema import task_config_table as c


def config_to_row(config: TaskConfig) -> dict[str, Any]:
    row = {
        "task_type": config.task_type,
        "task_name": config.task_name,
        "description": config.description,
        "executor_type": config.executor_type.value,
        "executor_config": config.executor_config,
        "default_timeout": config.default_timeout,
        "default_max_retry": config.default_max_retry,
        "retry_strategy": config.retry_strategy.value,
        "retry_delay": config.retry_delay,
        "backoff_rate": config.backoff_rate,
        "max_concurrent": config.max_concurrent,
        "enabled": config.enabled,
    }
    if config.created_at is not None:
        row["created_at"] = config.created_at
    return row


def row_to_config(row: Any) -> TaskConfig:
    values = dict(row._mapping)
    values.pop("db_now", None)  # the queue reads the clock in the same statement
    values["enabled"] = bool(values["enabled"])
    return restore(TaskConfig, values)


class SqlTaskConfigRepository(SqlRepository):
    entity = "task_config"

    def create(self, config: TaskConfig) -> None:
        entity("config", config, TaskConfig)
        self._execute(insert(c), config_to_row(config), key=config.task_type)

    def find(self, task_type: str) -> TaskConfig | None:
        check.identifier("task_type", task_type)
        row = self._execute(select(c).where(c.c.task_type == task_type)).first()
        return None if row is None else row_to_config(row)

    def get(self, task_type: str) -> TaskConfig:
        config = self.find(task_type)
        if config is None:
            raise NotFoundError(self.entity, task_type)
        return config

    def update(self, config: TaskConfig) -> None:
        entity("config", config, TaskConfig)
        """Writes every field; updated_at is set by the database (ON UPDATE, or a trigger)."""
        row = config_to_row(config)
        del row["task_type"]
        row.pop("created_at", None)
        result = self._execute(
            update(c).where(c.c.task_type == config.task_type).values(row), key=config.task_type
        )
        self._require_one(result, config.task_type)

    def delete(self, task_type: str) -> None:
        check.identifier("task_type", task_type)
        self._require_one(self._execute(delete(c).where(c.c.task_type == task_type)), task_type)

    def list(
        self, *, enabled: bool | None = None, limit: int = 100, offset: int = 0
    ) -> list[TaskConfig]:
        limit, offset = page(limit, offset)
        query = (
            select(c).where(*_enabled(enabled)).order_by(c.c.task_type).limit(limit).offset(offset)
        )
        return [row_to_config(row) for row in self._execute(query)]

    def list_enabled(self) -> builtins.list[TaskConfig]:  # `list` is the method above
        query = select(c).where(*_enabled(True)).order_by(c.c.task_type)
        return [row_to_config(row) for row in self._execute(query)]

    def count(self, *, enabled: bool | None = None) -> int:
        query = select(func.count()).select_from(c).where(*_enabled(enabled))
        return int(self._execute(query).scalar_one())


def _enabled(enabled: bool | None) -> list[ColumnElement[bool]]:
    if enabled is None:
        return []
    return [c.c.enabled == check.boolean("enabled", enabled)]
