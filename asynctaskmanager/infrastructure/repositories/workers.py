"""Workers and their heartbeats."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, func, select

from asynctaskmanager.domain import validation as check
from asynctaskmanager.domain.enums import WorkerStatus
from asynctaskmanager.domain.models import Worker
from asynctaskmanager.infrastructure.repositories.table import TableRepository, page, reads
from asynctaskmanager.infrastructure.schema import worker_table as w

# Every column but last_heartbeat, which the database fills in when a worker has none.
_COLUMNS = (
    "worker_id",
    "worker_name",
    "address",
    "status",
    "capacity",
    "current_load",
    "supported_types",
)


class SqlWorkerRepository(TableRepository[Worker]):
    entity = "worker"
    argument = "worker"
    kind = Worker
    table = w
    key = "worker_id"
    columns = _COLUMNS
    # A heartbeat given is written, on insert and on update alike.
    stamped = "last_heartbeat"
    database_owned = frozenset()

    def values(self, item: Worker) -> tuple[Any, ...]:
        return (
            item.worker_id,
            item.worker_name,
            item.address,
            item.status.value,
            item.capacity,
            item.current_load,
            item.supported_types,
        )

    @reads
    def list(
        self,
        *,
        status: WorkerStatus | None = None,
        heartbeat_before: datetime | None = None,
        heartbeat_after: datetime | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[Worker]:
        """Ordered by last heartbeat, oldest first: the likeliest dead come first."""
        limit, offset = page(limit, offset)
        query = (
            select(w)
            .where(*_conditions(status, heartbeat_before, heartbeat_after))
            .order_by(w.c.last_heartbeat, w.c.worker_id)
            .limit(limit)
            .offset(offset)
        )
        return [self.from_row(row) for row in self._execute(query)]

    @reads
    def count(
        self,
        *,
        status: WorkerStatus | None = None,
        heartbeat_before: datetime | None = None,
        heartbeat_after: datetime | None = None,
    ) -> int:
        query = (
            select(func.count())
            .select_from(w)
            .where(*_conditions(status, heartbeat_before, heartbeat_after))
        )
        return int(self._execute(query).scalar_one())


def _conditions(
    status: WorkerStatus | None, before: datetime | None, after: datetime | None
) -> list[ColumnElement[bool]]:
    """``heartbeat_before`` is exclusive, ``heartbeat_after`` inclusive."""
    conditions: list[ColumnElement[bool]] = []
    if status is not None:
        conditions.append(w.c.status == check.enum_member("status", WorkerStatus, status).value)
    if before is not None:
        conditions.append(w.c.last_heartbeat < check.timestamp("heartbeat_before", before))
    if after is not None:
        conditions.append(w.c.last_heartbeat >= check.timestamp("heartbeat_after", after))
    return conditions
