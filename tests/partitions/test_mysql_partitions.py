"""Monthly partitions on MariaDB/MySQL: the key's guarantees, status, rotation under load."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import URL, event, text
from sqlalchemy.dialects import mysql

from asynctaskmanager import (
    ConfigurationError,
    DuplicateError,
    ExecutorType,
    Storage,
    Task,
    TaskConfig,
    TaskStatus,
    Worker,
    open_storage,
)
from asynctaskmanager.partitions import enable, id_at, partition_status, rotate
from asynctaskmanager.partitions.months import add_months, month_start, partition_name
from asynctaskmanager.queue.claim import claim_statement
from tests.conftest import mysql_only
from tests.migrations.test_migrations import run_check

UTC = timezone.utc
JOB = "job"
NOW = datetime.now(UTC)
CURRENT = month_start(NOW)


def old_task(months_back: int, status: TaskStatus = TaskStatus.COMPLETED, **fields: object) -> Task:
    """A task whose id and created_at lie in the middle of the month ``months_back`` ago."""
    created = add_months(CURRENT, -months_back) + timedelta(days=10)
    options: dict[str, object] = {"task_id": id_at(created), "created_at": created}
    options.update(fields)
    return Task(JOB, status=status, **options)  # type: ignore[arg-type]


def open_partitioned(url: URL, history_months: int = 6) -> Storage:
    storage = open_storage(url, upgrade=True)
    storage.task_configs.create(TaskConfig(JOB, "Job", ExecutorType.FUNCTION, max_concurrent=1000))
    for months_back in range(history_months, 0, -1):
        storage.tasks.create(old_task(months_back))
    enable(storage, ahead=2)
    return storage


@pytest.fixture
def partitioned(fresh_mysql_database: URL) -> Iterator[Storage]:
    storage = open_partitioned(fresh_mysql_database)
    try:
        yield storage
    finally:
        storage.close()


def names(storage: Storage, table: str = "task") -> list[str]:
    return [p.name for p in partition_status(storage) if p.table == table]


def explain(storage: Storage, sql: str, **params: object) -> list[dict[str, object]]:
    with storage.engine.connect() as connection:
        rows = connection.execute(text(f"EXPLAIN PARTITIONS {sql}"), params).mappings().all()
    return [dict(row) for row in rows]


pytestmark = mysql_only


def test_enable_lays_out_months_from_the_oldest_id_to_ahead(partitioned: Storage) -> None:
    expected = [partition_name(add_months(CURRENT, k)) for k in range(-6, 3)]
    assert names(partitioned) == ["p_low", *expected, "p_future", "p_named"]
    assert names(partitioned, "task_log") == ["p_low", *expected, "p_future", "p_named"]
    assert enable(partitioned) == []  # already partitioned: nothing to do


def test_a_duplicate_id_is_refused_even_with_created_at_in_another_month(
    partitioned: Storage,
) -> None:
    task = old_task(3)
    partitioned.tasks.create(task)
    with pytest.raises(DuplicateError):
        partitioned.tasks.create(Task(JOB, task_id=task.task_id, created_at=NOW))
    with pytest.raises(DuplicateError):
        partitioned.tasks.create(Task(JOB, task_id="order-123"))
        partitioned.tasks.create(Task(JOB, task_id="order-123", created_at=NOW))


def test_get_by_id_touches_one_partition(partitioned: Storage) -> None:
    task = old_task(4)
    partitioned.tasks.create(task)
    [row] = explain(partitioned, "SELECT * FROM task WHERE task_id = :i", i=task.task_id)
    assert row["partitions"] == partition_name(add_months(CURRENT, -4))
    partitioned.tasks.create(Task(JOB, task_id="order-123"))
    [row] = explain(partitioned, "SELECT * FROM task WHERE task_id = :i", i="order-123")
    assert row["partitions"] == "p_named"
    assert partitioned.tasks.get(task.task_id) == partitioned.tasks.get(task.task_id)


def test_claim_is_index_served_without_filesort(partitioned: Storage) -> None:
    for _ in range(50):
        partitioned.queue.enqueue(JOB)
    sql = claim_statement([JOB], 5, skip_locked=True).compile(
        dialect=mysql.dialect(), compile_kwargs={"literal_binds": True}
    )
    plan = [row for row in explain(partitioned, str(sql)) if row["table"] == "task"]
    assert plan and plan[0]["key"] == "ix_task_claim"
    assert "filesort" not in str(plan[0]["Extra"]).lower()


def test_status_reports_bounds_rows_and_unfinished_tasks(partitioned: Storage) -> None:
    pending = old_task(2, TaskStatus.PENDING)
    partitioned.tasks.create(pending)
    status = {(p.table, p.name): p for p in partition_status(partitioned)}
    month = status[("task", partition_name(add_months(CURRENT, -2)))]
    assert (month.lower, month.upper) == (add_months(CURRENT, -2), add_months(CURRENT, -1))
    assert month.unfinished == 1 and month.unfinished_sample == (pending.task_id,)
    assert status[("task", partition_name(add_months(CURRENT, -3)))].unfinished == 0
    assert status[("task_log", "p_named")].unfinished is None


def test_dry_run_prints_the_sql_and_changes_nothing(partitioned: Storage) -> None:
    before = names(partitioned)
    report = rotate(partitioned, ahead=4, retain_months=3, dry_run=True)
    assert before == names(partitioned)
    assert any("REORGANIZE PARTITION p_future" in sql for sql in report.statements)
    assert any("DROP PARTITION" in sql for sql in report.statements)
    assert report.executed == []


def test_rotate_adds_ahead_and_drops_final_months_past_retention(partitioned: Storage) -> None:
    report = rotate(partitioned, ahead=4, retain_months=3)
    assert report.complete, report.problems
    months = [partition_name(add_months(CURRENT, k)) for k in range(-3, 5)]
    assert names(partitioned) == ["p_low", *months, "p_future", "p_named"]
    assert names(partitioned, "task_log") == ["p_low", *months, "p_future", "p_named"]
    assert "task.p" + add_months(CURRENT, -6).strftime("%Y%m") in report.dropped
    again = rotate(partitioned, ahead=4, retain_months=3)
    assert again.statements == [] and again.complete


def test_a_month_with_an_unfinished_task_is_kept_and_named(partitioned: Storage) -> None:
    stuck = old_task(5, TaskStatus.PENDING)
    partitioned.tasks.create(stuck)
    report = rotate(partitioned, ahead=2, retain_months=3)
    five = partition_name(add_months(CURRENT, -5))
    [held] = report.held
    assert held.name == five and held.unfinished == 1
    assert held.unfinished_sample == (stuck.task_id,)
    assert stuck.task_id in held.describe()
    assert five in names(partitioned) and partition_name(add_months(CURRENT, -6)) not in names(
        partitioned
    )
    # task_log keeps month 5 and everything after it: its logs may be the stuck task's.
    assert five in names(partitioned, "task_log")


def test_a_task_created_inside_the_retention_keeps_its_id_month(partitioned: Storage) -> None:
    # Id made on the last second of a month past the retention, stored after the cutoff.
    edge = add_months(CURRENT, -3) - timedelta(seconds=1)
    straddler = Task(
        JOB,
        task_id=id_at(edge),
        created_at=add_months(CURRENT, -3) + timedelta(seconds=1),
        status=TaskStatus.COMPLETED,
    )
    partitioned.tasks.create(straddler)
    report = rotate(partitioned, ahead=2, retain_months=3)
    [held] = report.held
    assert held.created_in_retention == 1 and held.created_in_retention_sample == (
        straddler.task_id,
    )
    assert partitioned.tasks.get(straddler.task_id).task_id == straddler.task_id


def test_rotate_stops_when_the_catch_all_holds_rows(partitioned: Storage) -> None:
    far = add_months(CURRENT, 6) + timedelta(days=1)  # a clock far ahead made this id
    partitioned.tasks.create(Task(JOB, task_id=id_at(far), created_at=NOW))
    report = rotate(partitioned, ahead=4, retain_months=12)
    assert not report.complete
    assert any("task.p_future holds rows" in problem for problem in report.problems)
    assert partition_name(add_months(CURRENT, 4)) not in names(partitioned)


def test_rotation_with_workers_running_loses_and_doubles_nothing(partitioned: Storage) -> None:
    workers = [f"w{i}" for i in range(4)]
    for worker in workers:
        partitioned.queue.register_worker(Worker(worker, worker, "127.0.0.1:0", capacity=50))
    tasks = [partitioned.queue.enqueue(JOB, {"n": n}).task_id for n in range(400)]
    stop = threading.Event()
    completed: list[str] = []
    errors: list[BaseException] = []

    def work(worker: str) -> None:
        try:
            while not stop.is_set():
                claimed = partitioned.queue.claim(worker, 5)
                if not claimed and len(completed) >= len(tasks):
                    return
                for task in claimed:
                    if partitioned.queue.complete(task, {"ok": True}):
                        completed.append(task.task_id)
        except BaseException as error:  # reported by the assertion below
            errors.append(error)

    threads = [threading.Thread(target=work, args=(w,)) for w in workers]
    for thread in threads:
        thread.start()
    reports = [rotate(partitioned, ahead=a, retain_months=r) for a, r in ((3, 5), (4, 4), (5, 3))]
    deadline = time.monotonic() + 60
    while len(completed) < len(tasks) and time.monotonic() < deadline:
        time.sleep(0.05)
    stop.set()
    for thread in threads:
        thread.join()
    assert errors == []
    assert sorted(completed) == sorted(tasks)  # each exactly once
    with partitioned.engine.connect() as connection:
        done = connection.execute(
            text(
                "SELECT COUNT(*) FROM task WHERE status = 'completed' AND task_type = :t"
                " AND task_id >= :lo"
            ),
            {"t": JOB, "lo": id_at(CURRENT)[:10]},
        ).scalar_one()
        logs = connection.execute(
            text(
                "SELECT task_id, COUNT(*) FROM task_log WHERE log_type = 'completed'"
                " GROUP BY task_id HAVING COUNT(*) > 1"
            )
        ).all()
    assert done == len(tasks) and logs == []
    assert any(report.dropped for report in reports)
    assert names(partitioned)[1] == partition_name(add_months(CURRENT, -3))


def test_a_writer_waits_no_longer_than_the_lock_wait_while_rotation_waits(
    partitioned: Storage,
) -> None:
    partitioned.queue.register_worker(Worker("holder", "holder", "127.0.0.1:0", capacity=5))
    partitioned.queue.enqueue(JOB)
    claim = claim_statement([JOB], 1, skip_locked=True)
    blocker = partitioned.engine.connect()
    transaction = blocker.begin()
    blocker.execute(claim).all()  # an open claim: holds the table's metadata lock
    outcome: dict[str, object] = {}

    def rotation() -> None:
        outcome["report"] = rotate(partitioned, ahead=4, retain_months=12, lock_wait_seconds=1)

    rotator = threading.Thread(target=rotation)
    rotator.start()
    time.sleep(0.4)  # the ALTER is now queued for its lock
    started = time.perf_counter()
    partitioned.queue.enqueue(JOB)
    stalled = time.perf_counter() - started
    rotator.join()
    transaction.rollback()
    blocker.close()
    report = outcome["report"]
    assert stalled < 1.0 + 0.5, stalled
    assert not report.complete  # type: ignore[attr-defined]
    assert any("gave up after waiting 1 s" in p for p in report.problems)  # type: ignore[attr-defined]
    # Once the transaction has ended, the next run does the work.
    assert rotate(partitioned, ahead=4, retain_months=12).complete


def test_two_rotations_at_once_do_the_work_once(partitioned: Storage) -> None:
    reports = []

    def run() -> None:
        reports.append(rotate(partitioned, ahead=5, retain_months=2))

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    months = [partition_name(add_months(CURRENT, k)) for k in range(-2, 6)]
    assert names(partitioned) == ["p_low", *months, "p_future", "p_named"]
    executed = [sql for report in reports for sql in report.executed]
    assert len(executed) == len(set(executed))
    assert all(report.complete or any("lease" in p for p in report.problems) for report in reports)


def test_month_bounds_are_utc_under_a_plus_eight_session(fresh_mysql_database: URL) -> None:
    storage = open_storage(fresh_mysql_database, upgrade=True)

    @event.listens_for(storage.engine, "connect")
    def plus_eight(dbapi_connection: object, record: object) -> None:
        cursor = dbapi_connection.cursor()  # type: ignore[attr-defined]
        cursor.execute("SET time_zone = '+08:00'")
        cursor.close()

    storage.engine.dispose()
    try:
        with storage.engine.connect() as connection:
            assert connection.execute(text("SELECT @@session.time_zone")).scalar() == "+08:00"
        storage.task_configs.create(TaskConfig(JOB, "Job", ExecutorType.FUNCTION))
        last_second = datetime(CURRENT.year - 1, 1, 31, 23, 59, 59, tzinfo=UTC)
        january = Task(JOB, task_id=id_at(last_second), created_at=last_second,
                       status=TaskStatus.COMPLETED)  # fmt: skip
        storage.tasks.create(january)
        enable(storage, ahead=1)
        by_name = {p.name: p for p in partition_status(storage) if p.table == "task"}
        jan = by_name[f"p{last_second.year}01"]
        assert jan.lower == datetime(last_second.year, 1, 1, tzinfo=UTC)
        assert jan.upper == datetime(last_second.year, 2, 1, tzinfo=UTC)
        [row] = explain(storage, "SELECT * FROM task WHERE task_id = :i", i=january.task_id)
        assert row["partitions"] == jan.name
        # The retention check compares created_at in UTC: created 1 s before the cutoff
        # (1 February of the year after) does not keep January.
        cutoff_now = datetime(last_second.year, 2, 1, tzinfo=UTC)
        report = rotate(
            storage, ahead=1, retain_months=1, dry_run=True, now=add_months(cutoff_now, 1)
        )
        assert report.held == []
        assert any(f"DROP PARTITION p{last_second.year}01" in s for s in report.statements)
    finally:
        storage.close()


def test_alembic_check_is_clean_with_partitions(partitioned: Storage) -> None:
    run_check(partitioned.engine)


def test_sqlite_does_not_partition(sqlite_storage: Storage) -> None:
    with pytest.raises(ConfigurationError, match="does not partition"):
        enable(sqlite_storage)
    with pytest.raises(ConfigurationError):
        rotate(sqlite_storage)
