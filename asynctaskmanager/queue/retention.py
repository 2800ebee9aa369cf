"""Retention: finished tasks, with their log rows, deleted in short batches; and the rows
of workers that went offline long ago and hold nothing.

Without it the task and task_log tables only grow. Each batch is its own short
transaction, so a large prune never holds many locks or a long transaction open, and it
can run beside busy workers: a claim never touches a finished task. The age is judged by
the database's clock, and a task is pruned only once both its creation and its end lie
before the cutoff (so that a long-running task's result does not vanish as it lands).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import bindparam, delete, exists, or_, select

from asynctaskmanager.domain import limits
from asynctaskmanager.domain import validation as check
from asynctaskmanager.domain.enums import FINAL_STATUSES, TaskStatus, WorkerStatus
from asynctaskmanager.errors import ValidationError
from asynctaskmanager.infrastructure.expressions import db_now, filter_only
from asynctaskmanager.infrastructure.schema import task_log_table as lg
from asynctaskmanager.infrastructure.schema import task_table as t
from asynctaskmanager.infrastructure.schema import worker_table as w
from asynctaskmanager.infrastructure.transactions import TransactionRunner
from asynctaskmanager.infrastructure.unit_of_work import UnitOfWork
from asynctaskmanager.partitions.pruning import drop_prunable_months

PRUNE_BATCH_MAX = 10_000

# Oldest first along the created_at index, resuming where the last batch ended, so that old
# tasks that are not prunable (pending far in the future, still running) are passed once.
_PRUNABLE = (
    select(t.c.task_id, t.c.created_at)
    .where(
        t.c.created_at >= bindparam("p_after"),
        t.c.created_at < bindparam("p_cutoff"),
        # Off the status index on SQLite: it would gather every finished row, then sort.
        filter_only(t.c.status).in_(bindparam("p_statuses", expanding=True)),
        or_(t.c.completed_at < bindparam("p_cutoff"), t.c.completed_at.is_(None)),
    )
    .order_by(t.c.created_at)
    .limit(bindparam("p_limit"))
)
_DELETE_LOGS = delete(lg).where(lg.c.task_id.in_(bindparam("p_task_ids", expanding=True)))
# Final statuses never change; the guard only keeps this statement safe on its own.
_DELETE_TASKS = delete(t).where(
    t.c.task_id.in_(bindparam("p_task_ids", expanding=True)),
    filter_only(t.c.status).in_(bindparam("p_statuses", expanding=True)),
)
# A worker process that ended (offline, by deregistering or by the sweep) long ago. A row
# that still counts load or running tasks stays: the sweep has not finished with it.
_DELETE_WORKERS = delete(w).where(
    w.c.status == WorkerStatus.OFFLINE.value,
    w.c.last_heartbeat < bindparam("p_cutoff"),
    w.c.current_load == 0,
    ~exists().where(t.c.worker_id == w.c.worker_id, t.c.status == TaskStatus.RUNNING.value),
)


@dataclass(frozen=True)
class PruneReport:
    """What a prune deleted, and the cutoff it used (the database's clock less the age).
    ``partitions`` names the month partitions it dropped whole (their rows are counted in
    ``tasks`` and ``logs``); empty where the tables are not partitioned."""

    tasks: int
    logs: int
    workers: int
    cutoff: datetime
    partitions: tuple[str, ...] = ()


def prune_finished(
    runner: TransactionRunner,
    older_than: timedelta,
    *,
    statuses: Iterable[TaskStatus] = FINAL_STATUSES,
    batch_size: int = 1000,
    worker_grace: timedelta = timedelta(0),
    on_batch: Callable[[int], None] | None = None,
) -> PruneReport:
    """See :meth:`TaskQueue.prune`. A worker row goes only once it has also been silent
    for ``worker_grace`` (the queue passes the time after which a silent worker is dead),
    so that a worker the sweep has just marked offline can still come back."""
    if not isinstance(older_than, timedelta) or older_than < timedelta(0):
        raise ValidationError("older_than", "must be a timedelta of at least 0", older_than)
    check.integer("batch_size", batch_size, 1, PRUNE_BATCH_MAX)
    pruned = _final_statuses(statuses)
    now: datetime = runner.run(
        lambda uow: uow.connection.execute(select(db_now())).scalar_one(), read_only=True
    )
    cutoff = _before(now, older_than)
    params: dict[str, Any] = {
        "p_after": limits.TIMESTAMP_MIN,
        "p_cutoff": cutoff,
        "p_statuses": pruned,
        "p_limit": batch_size,
    }
    months = drop_prunable_months(runner, cutoff, pruned, batch_size=batch_size)
    tasks, logs = months.tasks, months.logs
    if on_batch is not None and months.tasks:
        on_batch(months.tasks)
    while True:
        found, deleted_tasks, deleted_logs, last = runner.run(lambda uow: _prune_batch(uow, params))
        tasks += deleted_tasks
        logs += deleted_logs
        if on_batch is not None:
            on_batch(deleted_tasks)
        if found < batch_size or last is None:
            break
        params["p_after"] = last
    worker_cutoff = min(cutoff, _before(now, worker_grace))
    workers = runner.run(
        lambda uow: uow.connection.execute(_DELETE_WORKERS, {"p_cutoff": worker_cutoff}).rowcount
    )
    return PruneReport(
        tasks=tasks, logs=logs, workers=workers, cutoff=cutoff, partitions=months.partitions
    )


def _before(now: datetime, age: timedelta) -> datetime:
    """``now - age`` in whole seconds (as stored), and never before the earliest timestamp."""
    if age >= now - limits.TIMESTAMP_MIN:
        return limits.TIMESTAMP_MIN
    return (now - age).replace(microsecond=0)


def _prune_batch(uow: UnitOfWork, params: dict[str, Any]) -> tuple[int, int, int, Any]:
    rows = uow.connection.execute(_PRUNABLE, params).all()
    if not rows:
        return 0, 0, 0, None
    ids = {"p_task_ids": [row.task_id for row in rows], "p_statuses": params["p_statuses"]}
    logs = uow.connection.execute(_DELETE_LOGS, ids).rowcount
    tasks = uow.connection.execute(_DELETE_TASKS, ids).rowcount
    return len(rows), tasks, logs, rows[-1].created_at


def _final_statuses(statuses: Iterable[TaskStatus]) -> list[str]:
    if isinstance(statuses, (str, bytes)) or not isinstance(statuses, Iterable):
        raise ValidationError("statuses", "must be an iterable of TaskStatus", statuses)
    chosen = list(statuses)
    if not chosen or any(status not in FINAL_STATUSES for status in chosen):
        raise ValidationError(
            "statuses", "must name only final statuses: completed, failed, cancelled", chosen
        )
    return sorted(TaskStatus(status).value for status in chosen)
