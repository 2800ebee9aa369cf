"""Many workers at once: processes on MariaDB, PostgreSQL and an SQLite file, threads on memory.

Each run checks that every task was claimed once and completed once (from the workers'
own records and from the task log), that no error reached a worker, that capacity and
max_concurrent held at every sample taken during the run, and that every worker's
current_load matched its running tasks at every sample and ends at 0. Run with ``-s`` to
see the figures.
"""

from __future__ import annotations

import multiprocessing
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import (
    URL,
    ClauseElement,
    Executable,
    create_engine,
    event,
    func,
    select,
    text,
    update,
)
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler

from asynctaskmanager import (
    ExecutorType,
    LogType,
    RetryStrategy,
    Storage,
    TaskConfig,
    TaskPriority,
    TaskQueue,
    TaskRequest,
    TaskStatus,
    WorkerStatus,
)
from asynctaskmanager.infrastructure.engine import Database
from asynctaskmanager.infrastructure.expressions import db_now
from asynctaskmanager.infrastructure.schema import task_log_table as lg
from asynctaskmanager.infrastructure.schema import task_table as t
from asynctaskmanager.infrastructure.schema import worker_table as w
from asynctaskmanager.queue.claim import claim_statement
from tests.support.queue_workers import (
    SHORT_HEARTBEATS,
    WorkerReport,
    claim_and_hang,
    process_worker,
    work_loop,
)

pytestmark = pytest.mark.concurrency

SPAWN = multiprocessing.get_context("spawn")
LIMITED = "limited"  # a type whose max_concurrent is below the workers' total capacity
OPEN = "open"
LIMITED_MAX = 5


# --- set-up and checks shared by the runs --------------------------------------------------


def url_string(url: URL) -> str:
    return url.render_as_string(hide_password=False)


def prepare(storage: Storage, tasks: int) -> None:
    for task_type, max_concurrent in ((LIMITED, LIMITED_MAX), (OPEN, 1000)):
        storage.task_configs.create(
            TaskConfig(
                task_type,
                task_type,
                ExecutorType.FUNCTION,
                RetryStrategy.FIXED,
                retry_delay=0,
                max_concurrent=max_concurrent,
            )
        )
    priorities = list(TaskPriority)
    storage.queue.enqueue_many(
        TaskRequest(LIMITED if i % 2 else OPEN, {"i": i}, priority=priorities[i % 4])
        for i in range(tasks)
    )


@dataclass
class Samples:
    count: int = 0
    max_running: Counter[str] = field(default_factory=Counter)
    max_load: dict[str, int] = field(default_factory=dict)
    breaches: list[str] = field(default_factory=list)


RUNNING_BY_TYPE = (
    select(t.c.task_type, func.count()).where(t.c.status == "running").group_by(t.c.task_type)
)
# One statement, so one snapshot: the load and the running tasks it counts must agree. Only
# running rows are read (finished tasks keep their worker_id, so a per-worker lookup would
# read every task the worker ever ran).
_RUNNING_BY_WORKER = (
    select(t.c.worker_id, func.count().label("n"))
    .where(t.c.status == "running")
    .group_by(t.c.worker_id)
    .subquery()
)
LOAD_VS_RUNNING = select(
    w.c.worker_id,
    w.c.capacity,
    w.c.current_load,
    func.coalesce(_RUNNING_BY_WORKER.c.n, 0),
).select_from(w.outerjoin(_RUNNING_BY_WORKER, _RUNNING_BY_WORKER.c.worker_id == w.c.worker_id))


def take_sample(execute: Callable[[Any], list[Any]], samples: Samples) -> None:
    for task_type, running in execute(RUNNING_BY_TYPE):
        samples.max_running[task_type] = max(samples.max_running[task_type], running)
        if task_type == LIMITED and running > LIMITED_MAX:
            samples.breaches.append(f"{running} {LIMITED} tasks running (max {LIMITED_MAX})")
    for worker_id, capacity, load, running in execute(LOAD_VS_RUNNING):
        samples.max_load[worker_id] = max(samples.max_load.get(worker_id, 0), load)
        if load > capacity:
            samples.breaches.append(f"{worker_id}: load {load} > capacity {capacity}")
        if load != running:
            samples.breaches.append(f"{worker_id}: load {load} but {running} running")
    samples.count += 1


class Sampler:
    """Samples the database every few milliseconds while the workers run."""

    def __init__(self, execute: Callable[[Any], list[Any]], pause: float = 0.02) -> None:
        self.samples = Samples()
        self._execute = execute
        self._pause = pause
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.error: BaseException | None = None

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                take_sample(self._execute, self.samples)
                time.sleep(self._pause)
        except BaseException as error:  # pragma: no cover - reported by the test
            self.error = error

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


@contextmanager
def direct_reader(url: URL) -> Iterator[Callable[[Any], list[Any]]]:
    """Reads outside the library: autocommit, so each statement sees the latest commits
    (and, on SQLite, takes no write lock)."""
    engine = create_engine(url, isolation_level="AUTOCOMMIT")
    connection = engine.connect()

    def execute(statement: Any) -> list[Any]:
        return list(connection.execute(statement).all())

    try:
        yield execute
    finally:
        connection.close()
        engine.dispose()


def check_outcome(
    storage: Storage, reports: list[WorkerReport], tasks: int, samples: Samples
) -> int:
    """Asserts the run was clean; returns the number of double claims (0)."""
    errors = [error for report in reports for error in report.errors]
    assert errors == [], errors[0]
    claimed = Counter(task_id for report in reports for task_id in report.claimed)
    double_claims = sum(n - 1 for n in claimed.values() if n > 1)
    assert double_claims == 0
    assert len(claimed) == tasks
    assert sum(report.completed for report in reports) == tasks
    assert sum(report.refused for report in reports) == 0
    assert all(report.over_capacity == 0 for report in reports)

    def outcome(
        uow: Any,
    ) -> tuple[Counter[str], dict[str, tuple[int, ...]], dict[str, int]]:
        statuses = Counter(
            dict(
                uow.connection.execute(select(t.c.status, func.count()).group_by(t.c.status)).all()
            )
        )
        per_task: dict[str, tuple[int, ...]] = {}
        for log_type in (LogType.CLAIMED, LogType.COMPLETED):
            per_log = (
                select(func.count().label("n"))
                .where(lg.c.log_type == log_type.value)
                .group_by(lg.c.task_id)
                .subquery()
            )
            row = uow.connection.execute(
                select(func.count(), func.min(per_log.c.n), func.max(per_log.c.n))
            ).one()
            per_task[log_type.value] = tuple(int(n) for n in row)
        loads = dict(uow.connection.execute(select(w.c.worker_id, w.c.current_load)).all())
        return statuses, per_task, loads

    statuses, per_task, loads = storage.run(outcome)
    assert statuses == Counter({TaskStatus.COMPLETED.value: tasks})
    # Every task has exactly one CLAIMED and one COMPLETED log row.
    assert per_task == {"claimed": (tasks, 1, 1), "completed": (tasks, 1, 1)}
    assert set(loads.values()) == {0}
    assert samples.breaches == []
    assert samples.max_running[LIMITED] <= LIMITED_MAX
    return double_claims


def report_figures(
    label: str, reports: list[WorkerReport], tasks: int, seconds: float, samples: Samples
) -> None:
    claims = sum(report.claims for report in reports)
    empty = sum(report.empty_claims for report in reports)
    retries = sum(report.retries for report in reports)
    print(
        f"\n[{label}] {tasks} tasks, {len(reports)} workers, double claims 0, "
        f"{seconds:.1f}s ({tasks / seconds:.0f} tasks/s), {claims} claims ({empty} empty), "
        f"transient errors retried {retries}, "
        f"{samples.count} samples, max running {dict(samples.max_running)}, "
        f"max load per worker {max(samples.max_load.values(), default=0)}"
    )


def run_processes(url: URL, workers: int, capacity: int) -> tuple[list[WorkerReport], float]:
    start = SPAWN.Event()
    results = SPAWN.Queue()
    processes = [
        SPAWN.Process(
            target=process_worker,
            args=(url_string(url), f"p{i}", capacity, start, results),
            daemon=True,
        )
        for i in range(workers)
    ]
    for process in processes:
        process.start()
    _wait_registered(url, workers)
    began = time.monotonic()
    start.set()
    reports = [results.get(timeout=420) for _ in processes]
    seconds = time.monotonic() - began
    for process in processes:
        process.join(timeout=30)
        assert process.exitcode == 0
    return reports, seconds


def _wait_registered(url: URL, workers: int) -> None:
    with direct_reader(url) as execute:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if execute(select(func.count()).select_from(w))[0][0] == workers:
                return
            time.sleep(0.05)
    raise AssertionError("the worker processes did not register in time")


# --- the runs ------------------------------------------------------------------------------


def run_threads(threads: list[threading.Thread], storage: Storage, start: threading.Event) -> float:
    """Start the worker threads, release them together once all registered; seconds taken."""
    for thread in threads:
        thread.start()
    while storage.workers.count() < len(threads):
        time.sleep(0.01)
    began = time.monotonic()
    start.set()
    for thread in threads:
        thread.join(timeout=420)
    return time.monotonic() - began


SERVERS = [
    pytest.param("mysql", marks=pytest.mark.mysql),
    pytest.param("postgres", marks=pytest.mark.postgres),
]


@pytest.mark.parametrize("backend", SERVERS)
def test_server_processes_complete_every_task_once(
    request: pytest.FixtureRequest, backend: str
) -> None:
    storage: Storage = request.getfixturevalue(f"{backend}_storage")
    url: URL = request.getfixturevalue(f"{backend}_database_url")
    tasks, workers, capacity = 5000, 8, 4
    prepare(storage, tasks)
    with direct_reader(url) as execute, Sampler(execute) as sampler:
        reports, seconds = run_processes(url, workers, capacity)
    assert sampler.error is None
    check_outcome(storage, reports, tasks, sampler.samples)
    report_figures(f"{backend}, processes", reports, tasks, seconds, sampler.samples)


def test_sqlite_file_processes_complete_every_task_once(
    sqlite_storage: Storage, sqlite_url: URL
) -> None:
    tasks, workers, capacity = 1000, 4, 4
    prepare(sqlite_storage, tasks)
    with direct_reader(sqlite_url) as execute, Sampler(execute, pause=0.02) as sampler:
        reports, seconds = run_processes(sqlite_url, workers, capacity)
    assert sampler.error is None
    check_outcome(sqlite_storage, reports, tasks, sampler.samples)
    report_figures("sqlite file, processes", reports, tasks, seconds, sampler.samples)


def test_memory_threads_complete_every_task_once(memory_storage: Storage) -> None:
    tasks, workers, capacity = 2000, 8, 4
    prepare(memory_storage, tasks)
    start = threading.Event()
    reports: list[WorkerReport] = []

    def execute(statement: Any) -> list[Any]:
        return memory_storage.run(lambda uow: list(uow.connection.execute(statement).all()))

    def worker(i: int) -> None:
        reports.append(work_loop(memory_storage, f"t{i}", capacity=capacity, start=start))

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(workers)]
    with Sampler(execute) as sampler:
        seconds = run_threads(threads, memory_storage, start)
    assert sampler.error is None
    check_outcome(memory_storage, reports, tasks, sampler.samples)
    report_figures("memory, threads", reports, tasks, seconds, sampler.samples)


@pytest.mark.parametrize("backend", SERVERS)
def test_server_without_skip_locked_falls_back_correctly(
    request: pytest.FixtureRequest, backend: str
) -> None:
    """Servers without SKIP LOCKED get a plain FOR UPDATE: still no double claim."""
    storage: Storage = request.getfixturevalue(f"{backend}_storage")
    url: URL = request.getfixturevalue(f"{backend}_database_url")
    tasks, workers, capacity = 600, 6, 4
    prepare(storage, tasks)
    profile = replace(storage.profile, supports_skip_locked=lambda _dialect: False)
    fallback = Storage(Database(storage.engine, profile))
    sql: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if "FOR UPDATE" in statement and "FROM task " in statement:
            sql.append(statement)

    event.listen(fallback.engine, "before_cursor_execute", record)
    start = threading.Event()
    reports: list[WorkerReport] = []
    threads = [
        threading.Thread(
            target=lambda i=i: reports.append(
                work_loop(fallback, f"f{i}", capacity=capacity, start=start)
            )
        )
        for i in range(workers)
    ]
    try:
        with direct_reader(url) as execute, Sampler(execute) as sampler:
            seconds = run_threads(threads, fallback, start)
    finally:
        event.remove(fallback.engine, "before_cursor_execute", record)
    assert sql and not any("SKIP LOCKED" in statement for statement in sql)
    check_outcome(storage, reports, tasks, sampler.samples)
    report_figures(f"{backend}, threads, no SKIP LOCKED", reports, tasks, seconds, sampler.samples)


# --- a worker killed while holding tasks ---------------------------------------------------


@pytest.mark.parametrize("backend", ["sqlite", *SERVERS])
def test_killed_worker_tasks_are_taken_back_and_completed_once(
    request: pytest.FixtureRequest, backend: str
) -> None:
    storage: Storage = request.getfixturevalue(f"{backend}_storage")
    url: URL = request.getfixturevalue(
        "sqlite_url" if backend == "sqlite" else f"{backend}_database_url"
    )
    prepare(storage, 0)
    queue = TaskQueue(storage.runner, SHORT_HEARTBEATS)
    # Long timeouts: only the missed heartbeats can bring these tasks back.
    held_ids = {
        task.task_id
        for task in queue.enqueue_many(TaskRequest(OPEN, {"i": i}, timeout=3600) for i in range(3))
    }

    results = SPAWN.Queue()
    victim = SPAWN.Process(target=claim_and_hang, args=(url_string(url), "victim", 3, results))
    victim.start()
    old_tasks = results.get(timeout=60)
    assert {task.task_id for task in old_tasks} == held_ids
    assert all(task.worker_id == "victim" for task in old_tasks)
    assert victim.pid is not None
    victim.kill()
    victim.join(timeout=10)
    assert victim.exitcode == -signal.SIGKILL

    # The victim is silent from now on; sweep until it counts as dead (2 missed beats).
    requeued: list[str] = []
    deadline = time.monotonic() + 20
    while len(requeued) < len(held_ids) and time.monotonic() < deadline:
        report = queue.sweep()
        requeued += report.requeued
        if len(requeued) < len(held_ids):
            time.sleep(0.25)
    assert sorted(requeued) == sorted(held_ids)
    victim_row = storage.workers.get("victim")
    assert (victim_row.status, victim_row.current_load) == (WorkerStatus.OFFLINE, 0)

    # Another worker (its own process) picks them up and completes them.
    rescuer_reports, _ = run_processes_named(url, ["rescuer"], capacity=3)
    [rescuer] = rescuer_reports
    assert rescuer.errors == []
    assert sorted(rescuer.claimed) == sorted(held_ids)

    # The old worker's late completions are refused and change nothing.
    for old in old_tasks:
        assert queue.complete(old, {"by": "victim"}) is False
        stored = storage.tasks.get(old.task_id)
        assert stored.status is TaskStatus.COMPLETED
        assert stored.result == {"by": "rescuer"}
        assert stored.retry_count == 1
        kinds = Counter(log.log_type for log in storage.task_logs.list_for_task(old.task_id))
        assert kinds == Counter(
            {LogType.CREATED: 1, LogType.CLAIMED: 2, LogType.RESCUED: 1, LogType.COMPLETED: 1}
        )
        [rescued] = [
            log
            for log in storage.task_logs.list_for_task(old.task_id)
            if log.log_type is LogType.RESCUED
        ]
        assert rescued.message == "worker lost"
        assert rescued.details["worker_id"] == "victim"
    assert storage.workers.get("rescuer").current_load == 0


def run_processes_named(
    url: URL, worker_ids: list[str], capacity: int
) -> tuple[list[WorkerReport], float]:
    start = SPAWN.Event()
    results = SPAWN.Queue()
    processes = [
        SPAWN.Process(
            target=process_worker,
            args=(url_string(url), worker_id, capacity, start, results),
            daemon=True,
        )
        for worker_id in worker_ids
    ]
    for process in processes:
        process.start()
    began = time.monotonic()
    start.set()
    reports = [results.get(timeout=120) for _ in processes]
    for process in processes:
        process.join(timeout=30)
    return reports, time.monotonic() - began


# --- the claim query's plan ----------------------------------------------------------------


class Explain(Executable, ClauseElement):
    inherit_cache = False

    def __init__(self, statement: Any) -> None:
        self.statement = statement


@compiles(Explain)
def _compile_explain(element: Explain, compiler: SQLCompiler, **kw: Any) -> str:
    return "EXPLAIN " + compiler.process(element.statement, **kw)


def with_live_history(storage: Storage) -> None:
    """3,000 pending tasks with some history, as in a live queue: of the first 1,000,
    700 completed, 100 running and 200 due only in an hour."""
    prepare(storage, 3000)

    def age(uow: Any) -> None:
        ids = list(
            uow.connection.execute(select(t.c.task_id).order_by(t.c.task_id).limit(1000)).scalars()
        )
        uow.connection.execute(
            update(t).where(t.c.task_id.in_(ids[:700])).values(status="completed")
        )
        uow.connection.execute(
            update(t).where(t.c.task_id.in_(ids[700:800])).values(status="running")
        )
        future = uow.connection.execute(select(db_now())).scalar_one() + timedelta(hours=1)
        uow.connection.execute(
            update(t).where(t.c.task_id.in_(ids[800:])).values(scheduled_at=future)
        )

    storage.run(age)


@pytest.mark.mysql
def test_mariadb_claim_query_uses_the_claim_index_without_filesort(
    mysql_storage: Storage,
) -> None:
    with_live_history(mysql_storage)
    with mysql_storage.engine.connect() as connection:
        connection.execute(text("ANALYZE TABLE task")).all()

    statement = claim_statement([LIMITED, OPEN], 10, skip_locked=True)
    rows = mysql_storage.run(
        lambda uow: [dict(row._mapping) for row in uow.connection.execute(Explain(statement))]
    )
    sql = " ".join(str(statement.compile(mysql_storage.engine)).split())
    print(f"\n[claim query] {sql}")
    for row in rows:
        print("[EXPLAIN]", " | ".join(f"{key}={value}" for key, value in row.items()))
    [row] = rows
    assert row["key"] == "ix_task_claim"
    assert "filesort" not in (row["Extra"] or "")
    assert sql.endswith("FOR UPDATE SKIP LOCKED")


@pytest.mark.postgres
def test_postgres_claim_query_walks_the_claim_index_without_a_sort(
    postgres_storage: Storage,
) -> None:
    storage = postgres_storage
    with_live_history(storage)
    with storage.engine.connect() as connection:
        connection.execute(text("ANALYZE task"))
        connection.commit()
    statement = claim_statement([LIMITED, OPEN], 10, skip_locked=True)
    plan = storage.run(lambda uow: [row[0] for row in uow.connection.execute(Explain(statement))])
    print("\n[EXPLAIN]", "\n".join(plan))
    assert any("ix_task_claim" in line for line in plan)
    assert not any("Sort" in line for line in plan)
    sql = " ".join(str(statement.compile(storage.engine)).split())
    assert sql.endswith("FOR UPDATE SKIP LOCKED")
