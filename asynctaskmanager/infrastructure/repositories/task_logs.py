"""Task logs: the audit trail of every transition."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select

from asynctaskmanager.domain import validation as check
from asynctaskmanager.domain.models import TaskLog
from asynctaskmanager.infrastructure.repositories.table import TableRepository, page, reads
from asynctaskmanager.infrastructure.schema import task_log_table as lg

# Every column but created_at, which the database fills in when a log has none.
_COLUMNS = ("log_id", "task_id", "log_type", "from_status", "to_status", "message", "details")


def log_values(log: TaskLog) -> tuple[Any, ...]:
    """The row of ``log`` in _COLUMNS order."""
    return (
        log.log_id,
        log.task_id,
        log.log_type.value,
        None if log.from_status is None else log.from_status.value,
        None if log.to_status is None else log.to_status.value,
        log.message,
        log.details,
    )


class SqlTaskLogRepository(TableRepository[TaskLog]):
    entity = "task_log"
    argument = "log"
    kind = TaskLog
    table = lg
    key = "log_id"
    columns = _COLUMNS

    def values(self, item: TaskLog) -> tuple[Any, ...]:
        return log_values(item)

    @reads
    def list_for_task(self, task_id: str, *, limit: int = 1000, offset: int = 0) -> list[TaskLog]:
        """Oldest first. Rows of one second keep their write order: log ids are time-ordered."""
        check.identifier("task_id", task_id)
        limit, offset = page(limit, offset)
        query = (
            select(lg)
            .where(lg.c.task_id == task_id)
            .order_by(lg.c.created_at, lg.c.log_id)
            .limit(limit)
            .offset(offset)
        )
        return [self.from_row(row) for row in self._execute(query)]

    @reads
    def count_for_task(self, task_id: str) -> int:
        check.identifier("task_id", task_id)
        query = select(func.count()).select_from(lg).where(lg.c.task_id == task_id)
        return int(self._execute(query).scalar_one())
