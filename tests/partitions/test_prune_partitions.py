"""queue.prune on partitioned tables: whole months dropped, the rest deleted in batches."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta

import pytest
from sqlalchemy import URL, text
from sqlalchemy.pool import QueuePool

from asynctaskmanager import (
    ExecutorType,
    LogType,
    Storage,
    TaskConfig,
    TaskLog,
    TaskStatus,
    open_storage,
)
from asynctaskmanager.partitions import enable, id_at, rotate
from asynctaskmanager.partitions.catalogue import is_partitioned
from asynctaskmanager.partitions.lease import LEASE_NAME, LEASE_SECONDS, Lease
from asynctaskmanager.partitions.months import add_months, partition_name, ulid_prefix
from tests.conftest import mysql_only
from tests.partitions.test_mysql_partitions import (
    CURRENT,
    JOB,
    names,
    old_task,
    open_partitioned,
)

pytestmark = mysql_only


def month(back: int) -> str:
    return partition_name(add_months(CURRENT, -back))


def in_month(task_id: str, back: int) -> bool:
    low, high = (ulid_prefix(add_months(CURRENT, -k)) for k in (back, back - 1))
    return low <= task_id < high


def age_reaching(instant: datetime) -> timedelta:
    """The prune age whose cutoff is ``instant`` (to within the test's own run time)."""
    return datetime.now(instant.tzinfo) - instant


def log_at(task_id: str, back: int, day: int) -> TaskLog:
    """A log row of ``task_id`` written on ``day`` of the month ``back`` months ago."""
    written = add_months(CURRENT, -back) + timedelta(days=day)
    return TaskLog(task_id, LogType.INFO, log_id=id_at(written), created_at=written)


@pytest.fixture
def history(fresh_mysql_database: URL) -> Iterator[Storage]:
    storage = open_partitioned(fresh_mysql_database)  # one completed task in months -6..-1
    try:
        yield storage
    finally:
        storage.close()


def task_ids(storage: Storage) -> set[str]:
    with storage.engine.connect() as connection:
        return set(connection.execute(text("SELECT task_id FROM task")).scalars())


def log_ids(storage: Storage) -> set[str]:
    """The log rows, less the rotation lease's row (kept in task_log until a lease table)."""
    with storage.engine.connect() as connection:
        logs = set(connection.execute(text("SELECT log_id FROM task_log")).scalars())
    return logs - {LEASE_NAME}


def test_prune_drops_whole_final_months_and_deletes_the_rest_in_batches(
    history: Storage,
) -> None:
    before = task_ids(history)
    running = old_task(4, TaskStatus.RUNNING)
    history.tasks.create(running)
    [five] = [i for i in before if in_month(i, 5)]
    five_own_log = log_at(five, 5, 12)  # in its own month
    five_late_log = log_at(five, 4, 1)  # its completion, written the month after
    running_log = log_at(running.task_id, 3, 2)  # keeps task_log's month -3
    for log in (five_own_log, five_late_log, running_log):
        history.task_logs.create(log)

    # Cutoff mid-month -2: months -6..-3 lie wholly before it.
    report = history.queue.prune(age_reaching(add_months(CURRENT, -2) + timedelta(days=15)))

    assert report.partitions == (
        f"task.{month(6)}",
        f"task_log.{month(6)}",
        f"task.{month(5)}",
        f"task_log.{month(5)}",
        f"task.{month(3)}",
    )
    # -6, -5, -3 by DROP; -4's completed task and -2's by the batched DELETE.
    assert report.tasks == 5
    assert report.logs == 2  # -5's own log (dropped) and its late one (deleted)
    assert task_ids(history) == {running.task_id} | {i for i in before if in_month(i, 1)}
    assert log_ids(history) == {running_log.log_id}
    tasks_left = names(history)
    assert month(4) in tasks_left and month(2) in tasks_left
    assert not {month(6), month(5), month(3)} & set(tasks_left)
    assert month(3) in names(history, "task_log")  # holds the running task's log
    assert history.tasks.get(running.task_id).status is TaskStatus.RUNNING


def test_prune_keeps_a_month_holding_a_status_it_was_not_asked_for(history: Storage) -> None:
    failed = old_task(5, TaskStatus.FAILED)
    history.tasks.create(failed)
    report = history.queue.prune(
        age_reaching(add_months(CURRENT, -4)), statuses=[TaskStatus.COMPLETED]
    )
    assert report.partitions == (f"task.{month(6)}", f"task_log.{month(6)}")
    assert report.tasks == 2  # -6 dropped, -5's completed task deleted
    assert month(5) in names(history)
    assert history.tasks.get(failed.task_id).status is TaskStatus.FAILED


def test_prune_falls_back_to_deleting_a_month_whose_drop_waits_too_long(
    fresh_mysql_database: URL,
) -> None:
    storage = open_partitioned(fresh_mysql_database, history_months=2)
    try:
        blocker = storage.engine.connect()
        transaction = blocker.begin()
        blocker.execute(text("SELECT COUNT(*) FROM task")).scalar_one()  # holds a metadata lock
        try:
            report = storage.queue.prune(age_reaching(add_months(CURRENT, -1) + timedelta(days=15)))
        finally:
            transaction.rollback()
            blocker.close()
        assert report.partitions == ()  # the DROP gave up after the short lock wait
        assert report.tasks == 2  # both months' tasks deleted by the batches instead
        assert month(2) in names(storage)
    finally:
        storage.close()


def test_prune_only_deletes_while_a_rotation_holds_the_lease(history: Storage) -> None:
    rotation = Lease(history.engine, LEASE_NAME, LEASE_SECONDS)
    assert rotation.acquire()
    try:
        report = history.queue.prune(age_reaching(add_months(CURRENT, -4)))
    finally:
        rotation.release()
    assert report.partitions == ()
    assert report.tasks == 2  # months -6 and -5, by the batched DELETE
    assert month(6) in names(history)


def test_prune_drops_months_at_once_after_enable_in_the_same_process(
    fresh_mysql_database: URL,
) -> None:
    storage = open_storage(fresh_mysql_database, upgrade=True)
    try:
        storage.task_configs.create(TaskConfig(JOB, "Job", ExecutorType.FUNCTION))
        storage.tasks.create(old_task(3))
        age = age_reaching(add_months(CURRENT, -4))
        assert storage.queue.prune(age).tasks == 0  # unpartitioned: remembered as such
        assert not is_partitioned(storage.engine)
        enable(storage, ahead=1)
        storage.tasks.create(old_task(2))
        report = storage.queue.prune(age_reaching(add_months(CURRENT, -1)))
        assert report.partitions[0] == f"task.{month(3)}"
        assert report.tasks == 2
    finally:
        storage.close()


def test_partition_ddl_leaves_the_pool_with_the_servers_lock_wait(history: Storage) -> None:
    rotate(history, ahead=3, retain_months=2, lock_wait_seconds=1)
    history.queue.prune(age_reaching(add_months(CURRENT, -2)))
    pool = history.engine.pool
    assert isinstance(pool, QueuePool)
    pooled = [history.engine.connect() for _ in range(pool.checkedin())]
    try:
        waits = {
            connection.execute(
                text("SELECT @@SESSION.lock_wait_timeout = @@GLOBAL.lock_wait_timeout")
            ).scalar_one()
            for connection in pooled
        }
    finally:
        for connection in pooled:
            connection.close()
    assert pooled and waits == {1}
