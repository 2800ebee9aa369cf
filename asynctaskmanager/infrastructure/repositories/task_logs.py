"""Task logs: the audit trail of every transition."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import delete, func, select, update

from asynctaskmanager.domain import validation as check
from asynctaskmanager.domain.models import TaskLog, restore
from asynctaskmanager.errors import NotFoundError
from asynctaskmanager.infrastructure.prepared import PreparedInsert
from asynctaskmanager.infrastructure.repositories._base import SqlRepository, entity, page
from asynctaskmanager.infrastructure.schema import task_log_table as lg

# Every column but created_at, which the database fills in when a log has none.
_COLUMNS = ("log_id", "task_id", "log_type", "from_status", "to_status", "message", "details")
_INSERTS = (PreparedInsert(lg, _COLUMNS), PreparedInsert(lg, (*_COLUMNS, "created_at")))


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


def log_to_row(log: TaskLog) -> dict[str, Any]:
    row = dict(zip(_COLUMNS, log_values(log), strict=True))
    if log.created_at is not None:
        row["created_at"] = log.created_at
    return row


def row_to_log(row: Any) -> TaskLog:
    return restore(TaskLog, dict(row._mapping))


class SqlTaskLogRepository(SqlRepository):
    entity = "task_log"

    def create(self, log: TaskLog) -> None:
        entity("log", log, TaskLog)
        self._insert_one(log, log_values, _INSERTS)

    def create_many(self, logs: Iterable[TaskLog], *, savepoint: bool = True) -> int:
        """Insert all or none, in batches of executemany; returns how many were inserted.

        ``savepoint=False`` leaves out the SAVEPOINT that keeps a failed call from leaving
        rows behind: only for a transaction that will be rolled back after any failure.
        """
        return self._insert_all(logs, TaskLog, log_values, _INSERTS, savepoint=savepoint)

    def find(self, log_id: str) -> TaskLog | None:
        check.identifier("log_id", log_id)
        row = self._execute(select(lg).where(lg.c.log_id == log_id)).first()
        return None if row is None else row_to_log(row)

    def get(self, log_id: str) -> TaskLog:
        log = self.find(log_id)
        if log is None:
            raise NotFoundError(self.entity, log_id)
        return log

    def update(self, log: TaskLog) -> None:
        entity("log", log, TaskLog)
        row = log_to_row(log)
        del row["log_id"]
        row.pop("created_at", None)
        self._require_one(
            self._execute(update(lg).where(lg.c.log_id == log.log_id).values(row), key=log.log_id),
            log.log_id,
        )

    def delete(self, log_id: str) -> None:
        check.identifier("log_id", log_id)
        self._require_one(self._execute(delete(lg).where(lg.c.log_id == log_id)), log_id)

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
        return [row_to_log(row) for row in self._execute(query)]

    def count_for_task(self, task_id: str) -> int:
        check.identifier("task_id", task_id)
        query = select(func.count()).select_from(lg).where(lg.c.task_id == task_id)
        return int(self._execute(query).scalar_one())
