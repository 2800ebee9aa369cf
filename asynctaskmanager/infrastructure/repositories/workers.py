"""Workers and their heartbeats."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, delete, func, insert, select, update

from asynctaskmanager.domain import validation as check
from asynctaskmanager.domain.enums import WorkerStatus
from asynctaskmanager.domain.models import Worker, restore
from asynctaskmanager.errors import NotFoundError
from asynctaskmanager.infrastructure.repositories._base import SqlRepository, entity, page
from asynctaskmanager.infrastructure.schema import worker_table as w


def worker_to_row(worker: Worker) -> dict[str, Any]:
    row: dict[str, Any] = {
        "worker_id": worker.worker_id,
        "worker_name": worker.worker_name,
        "address": worker.address,
        "status": worker.status.value,
        "capacity": worker.capacity,
        "current_load": worker.current_load,
        "supported_types": worker.supported_types,
    }
    if worker.last_heartbeat is not None:
        row["last_heartbeat"] = worker.last_heartbeat
    return row


def row_to_worker(row: Any) -> Worker:
    return restore(Worker, dict(row._mapping))


class SqlWorkerRepository(SqlRepository):
    entity = "worker"

    def create(self, worker: Worker) -> None:
        entity("worker", worker, Worker)
        self._execute(insert(w), worker_to_row(worker), key=worker.worker_id)

    def find(self, worker_id: str) -> Worker | None:
        check.identifier("worker_id", worker_id)
        row = self._execute(select(w).where(w.c.worker_id == worker_id)).first()
        return None if row is None else row_to_worker(row)

    def get(self, worker_id: str) -> Worker:
        worker = self.find(worker_id)
        if worker is None:
            raise NotFoundError(self.entity, worker_id)
        return worker

    def update(self, worker: Worker) -> None:
        entity("worker", worker, Worker)
        row = worker_to_row(worker)
        del row["worker_id"]
        self._require_one(
            self._execute(
                update(w).where(w.c.worker_id == worker.worker_id).values(row), key=worker.worker_id
            ),
            worker.worker_id,
        )

    def delete(self, worker_id: str) -> None:
        check.identifier("worker_id", worker_id)
        self._require_one(self._execute(delete(w).where(w.c.worker_id == worker_id)), worker_id)

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
        return [row_to_worker(row) for row in self._execute(query)]

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
