"""The SQL of the workers' lifecycle: heartbeats, going offline, and what the sweep finds."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

from sqlalchemy import case, or_, select, update

from asynctaskmanager.domain.attempts import is_overdue
from asynctaskmanager.domain.enums import TaskStatus, WorkerStatus
from asynctaskmanager.domain.models import Task, Worker
from asynctaskmanager.errors import NotFoundError
from asynctaskmanager.infrastructure.expressions import db_now
from asynctaskmanager.infrastructure.repositories.tasks import row_to_task
from asynctaskmanager.infrastructure.schema import task_table as t
from asynctaskmanager.infrastructure.schema import worker_table as w
from asynctaskmanager.infrastructure.unit_of_work import UnitOfWork
from asynctaskmanager.queue.settings import QueueSettings


def register(uow: UnitOfWork, worker: Worker) -> Worker:
    """The worker's row, online with a fresh heartbeat and no load (inserted or replaced)."""
    now = uow.connection.execute(select(db_now())).scalar_one()
    fresh = replace(worker, status=WorkerStatus.ONLINE, current_load=0, last_heartbeat=now)
    if uow.workers.find(worker.worker_id) is None:
        uow.workers.create(fresh)
    else:
        uow.workers.update(fresh)
    return fresh


def beat(uow: UnitOfWork, worker_id: str) -> set[str]:
    """A heartbeat, by the database's clock; returns the ids of the tasks the worker holds."""
    result = uow.connection.execute(
        update(w)
        .where(w.c.worker_id == worker_id)
        # A worker marked offline for silence is alive after all; a draining one
        # stays draining.
        .values(
            last_heartbeat=db_now(),
            status=case(
                (w.c.status == WorkerStatus.OFFLINE.value, WorkerStatus.ONLINE.value),
                else_=w.c.status,
            ),
        )
    )
    if result.rowcount != 1:
        raise NotFoundError("worker", worker_id)
    held = select(t.c.task_id).where(
        t.c.worker_id == worker_id, t.c.status == TaskStatus.RUNNING.value
    )
    return set(uow.connection.execute(held).scalars())


def held_by(uow: UnitOfWork, worker_id: str) -> list[Task]:
    """The running tasks ``worker_id`` holds."""
    rows = uow.connection.execute(
        select(t).where(t.c.worker_id == worker_id, t.c.status == TaskStatus.RUNNING.value)
    )
    return [row_to_task(row) for row in rows]


def find_overdue(
    uow: UnitOfWork, settings: QueueSettings
) -> tuple[list[str], list[tuple[Task, bool, bool]]]:
    """The silent workers not yet offline, and each running task that is lost (its
    worker is silent) or timed out, by the database's clock."""
    now = uow.connection.execute(select(db_now())).scalar_one()
    # Silent workers, offline ones included: an earlier sweep may have marked one
    # offline and stopped before taking back its tasks.
    holders = select(t.c.worker_id).where(t.c.status == TaskStatus.RUNNING.value)
    silent = dict(
        uow.connection.execute(
            select(w.c.worker_id, w.c.status).where(
                w.c.last_heartbeat < now - settings.dead_after,
                or_(w.c.status != WorkerStatus.OFFLINE.value, w.c.worker_id.in_(holders)),
            )
        ).all()
    )
    running = uow.connection.execute(select(t).where(t.c.status == TaskStatus.RUNNING.value))
    overdue = []
    for task in map(row_to_task, running):
        lost = task.worker_id in silent
        timed_out = is_overdue(task, now, settings.timeout_grace)
        if lost or timed_out:
            overdue.append((task, lost, timed_out))
    dead = sorted(
        worker_id for worker_id, status in silent.items() if status != WorkerStatus.OFFLINE.value
    )
    return dead, overdue


def set_worker_status(uow: UnitOfWork, worker_id: str, status: WorkerStatus) -> None:
    result = uow.connection.execute(
        update(w).where(w.c.worker_id == worker_id).values(status=status.value)
    )
    if result.rowcount != 1:
        raise NotFoundError("worker", worker_id)


def mark_dead(uow: UnitOfWork, worker_id: str, dead_after: timedelta) -> bool:
    """Offline, if it is still silent by the database's clock (it may have just woken up)."""
    now = uow.connection.execute(select(db_now())).scalar_one()
    result = uow.connection.execute(
        update(w)
        .where(
            w.c.worker_id == worker_id,
            w.c.last_heartbeat < now - dead_after,
            w.c.status != WorkerStatus.OFFLINE.value,
        )
        .values(status=WorkerStatus.OFFLINE.value)
    )
    return bool(result.rowcount == 1)
