"""queue.prune on partitioned tables: whole months dropped instead of deleted row by row.

A month of ``task`` whose every task prune would delete (final, of the statuses asked for,
created and ended before the cutoff) is dropped as a partition, its ``task_log`` partition
with it when no stored task outside that month has logs there. The logs of the month's
tasks written in later months go by a short batched DELETE. What is left (months with a
task to keep, ``p_low``, ``p_named``) is the queue's batched DELETE's, as without partitions.

Each DROP waits at most a short lock wait for its metadata lock (an ALTER queued behind an
open transaction blocks every writer of the table while it waits); past it, that month is
left to the batched DELETE. Drops take the rotation's lease, so that prune and rotate never
drop the same partition at once; when another host holds it, prune only deletes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, text
from sqlalchemy.exc import DBAPIError

from asynctaskmanager.infrastructure.errors import translate
from asynctaskmanager.infrastructure.transactions import TransactionRunner
from asynctaskmanager.partitions.catalogue import is_partitioned
from asynctaskmanager.partitions.lease import (
    DEFAULT_LOCK_WAIT_SECONDS,
    LEASE_NAME,
    LEASE_SECONDS,
    Lease,
)
from asynctaskmanager.partitions.months import ERA_START, add_months, month_of
from asynctaskmanager.partitions.mysql import MySQLPartitioning, RawPartition


@dataclass(frozen=True, slots=True)
class DroppedMonths:
    """What prune removed by dropping partitions: rows counted just before each DROP."""

    tasks: int = 0
    logs: int = 0
    partitions: tuple[str, ...] = ()


def drop_prunable_months(
    runner: TransactionRunner,
    cutoff: datetime,
    statuses: Sequence[str],
    *,
    batch_size: int,
    lock_wait_seconds: int = DEFAULT_LOCK_WAIT_SECONDS,
) -> DroppedMonths:
    """Drop every month of ``task`` that lies wholly before ``cutoff`` and holds only tasks
    prune would delete (see the module's docstring); nothing where the table is not
    partitioned by month. ``statuses`` are final statuses' values."""
    try:
        if not is_partitioned(runner.engine):
            return DroppedMonths()
        strategy = MySQLPartitioning()
        with runner.engine.connect() as connection:
            candidates = _candidates(strategy, connection, cutoff)
        if not candidates:
            return DroppedMonths()
        lease = Lease(runner.engine, LEASE_NAME, LEASE_SECONDS)
        if not lease.acquire():
            return DroppedMonths()  # a rotation runs: the batched DELETE does it all
        try:
            with strategy.ddl_connection(runner.engine, lock_wait_seconds) as connection:
                return _drop(strategy, connection, candidates, cutoff, statuses, batch_size)
        finally:
            lease.release()
    except DBAPIError as error:
        raise translate(error, runner.profile) from error


@dataclass(frozen=True, slots=True)
class _Month:
    name: str
    low: str  # the task ids of the partition are [low, high)
    high: str
    has_log_partition: bool


def _candidates(
    strategy: MySQLPartitioning, connection: Connection, cutoff: datetime
) -> list[_Month]:
    tasks = strategy.layout(connection, "task", "task_id")
    logs = strategy.layout(connection, "task_log", "log_id")
    if tasks is None or logs is None:
        return []
    log_months = {part.name for part in logs if month_of(part.name) is not None}
    months: list[_Month] = []
    previous: RawPartition | None = None
    for part in tasks:
        month = month_of(part.name)
        if month is not None and part.bound is not None and add_months(month, 1) <= cutoff:
            low = previous.bound if previous is not None and previous.bound else ERA_START
            months.append(_Month(part.name, low, part.bound, part.name in log_months))
        previous = part
    # Never every month: the oldest one left also takes the ids older than it.
    total = sum(1 for part in tasks if month_of(part.name) is not None)
    return months[: max(0, total - 1)]


def _drop(
    strategy: MySQLPartitioning,
    connection: Connection,
    months: Sequence[_Month],
    cutoff: datetime,
    statuses: Sequence[str],
    batch_size: int,
) -> DroppedMonths:
    tasks = logs = 0
    dropped: list[str] = []
    for month in months:
        count, kept = strategy.prune_check(connection, month.name, cutoff, statuses)
        if count == 0 or kept:
            continue  # empty: rotation's; a task to keep: the batched DELETE's
        drop_logs = month.has_log_partition and not strategy.foreign_live_logs(
            connection, month.name, month.low, month.high
        )
        log_count = strategy.count_rows(connection, "task_log", month.name) if drop_logs else 0
        connection.commit()  # end the reads' snapshot before the DDL
        if not _run_ddl(strategy, connection, strategy.drop("task", [month.name])):
            continue  # the lock wait ran out: the batched DELETE takes this month
        tasks += count
        dropped.append(f"task.{month.name}")
        if drop_logs and _run_ddl(strategy, connection, strategy.drop("task_log", [month.name])):
            logs += log_count
            dropped.append(f"task_log.{month.name}")
        logs += strategy.delete_orphan_logs(connection, month.low, month.high, batch_size)
    return DroppedMonths(tasks, logs, tuple(dropped))


def _run_ddl(strategy: MySQLPartitioning, connection: Connection, sql: str) -> bool:
    """Run one partition ALTER; False when it gave up waiting for its metadata lock."""
    try:
        connection.execute(text(sql))
    except DBAPIError as error:
        if not strategy.is_lock_wait_timeout(error):
            raise
        connection.rollback()
        return False
    connection.commit()
    return True
