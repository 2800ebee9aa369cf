"""Worker processes spread over the cluster's nodes (issue 12): every task completed exactly
once, no type's max_concurrent nor any worker's capacity exceeded at any moment a watcher
sees, every load back to 0, and no TransientStorageError reaching a caller; the same while a
node is SIGKILLed mid-run; and the sweep run from every node at once."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from sqlalchemy import URL, create_engine, text
from sqlalchemy.exc import OperationalError
from sqlalchemy.pool import NullPool

from asynctaskmanager import (
    ExecutorType,
    Storage,
    TaskConfig,
    TaskRequest,
    TaskStatus,
    Worker,
    WorkerStatus,
    open_storage,
)
from asynctaskmanager.errors import AsyncTaskManagerError
from asynctaskmanager.infrastructure.unit_of_work import UnitOfWork
from tests.cluster.conftest import GaleraNodes, multi_host
from tests.cluster.handlers import FREE, LIMITED

pytestmark = pytest.mark.galera

ROOT = Path(__file__).resolve().parents[2]
TASKS = 5000
LIMITED_TASKS = 1000
LIMIT = 6
PROCESSES = 6
CONCURRENCY = 4
RUN_TIMEOUT_S = 240.0
# What a caller sees of a TransientStorageError: the worker logs each failed call's message.
TRANSIENT = "transient database failure"

BY_STATUS = text("SELECT status, COUNT(*) FROM task GROUP BY status")
RUNNING_BY_TYPE = text(
    "SELECT task_type, COUNT(*) FROM task WHERE status = 'running' GROUP BY task_type"
)
# One statement, so one consistent read: each worker's load against what it really holds.
LOADS = text(
    "SELECT w.worker_id, w.capacity, w.current_load, "
    "(SELECT COUNT(*) FROM task t WHERE t.worker_id = w.worker_id AND t.status = 'running') "
    "FROM worker w"
)


CONFLICT_COUNTERS = text(
    "SHOW GLOBAL STATUS WHERE Variable_name IN "
    "('wsrep_local_cert_failures', 'wsrep_local_bf_aborts')"
)


def conflicts(node_urls: list[URL]) -> dict[int, int]:
    """Transactions each answering node rolled back for conflicts so far: certification
    failures and brute-force aborts of local transactions by replicated ones (what reaches
    the library as 1213), by node port."""
    counted = {}
    for url in node_urls:
        engine = create_engine(url, poolclass=NullPool, connect_args={"connect_timeout": 2})
        try:
            with engine.connect() as connection:
                rows = connection.execute(CONFLICT_COUNTERS)
                counted[url.port or 0] = sum(int(value) for _, value in rows)
        except OperationalError:
            pass  # a killed node
        finally:
            engine.dispose()
    return counted


def count(storage: Storage, query: str) -> int:
    """``SELECT COUNT(*) ...`` read through ``storage`` as of every node's latest commit."""
    return int(
        storage.run(
            lambda uow: uow.connection.execute(text(query)).scalar_one(),
            read_only=True,
            sync_wait=True,
        )
    )


def tasks_claimed(storage: Storage) -> int:
    return count(storage, "SELECT COUNT(*) FROM task_log WHERE log_type = 'claimed'")


def node_first(node_urls: list[URL], index: int) -> str:
    """The multi-host URL with node ``index`` first: its workers use that node, and the
    others once it dies."""
    return multi_host([*node_urls[index:], *node_urls[:index]])


@dataclass
class Watch:
    """Polls the cluster through one node while the workers run."""

    url: str
    limits: dict[str, int]
    peak_running: dict[str, int] = field(default_factory=dict)
    violations: list[str] = field(default_factory=list)
    reads: int = 0
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        with open_storage(self.url) as storage:
            while not self.stop.is_set():
                try:
                    running, loads = storage.run(_snapshot, read_only=True, sync_wait=True)
                except AsyncTaskManagerError:
                    time.sleep(0.05)  # its node may be the one killed: read again
                    continue
                self.reads += 1
                for task_type, count in running.items():
                    self.peak_running[task_type] = max(self.peak_running.get(task_type, 0), count)
                    if count > self.limits[task_type]:
                        self.violations.append(f"{task_type}: {count} running")
                for worker_id, capacity, load, held in loads:
                    if load > capacity or load != held:
                        self.violations.append(f"{worker_id}: load {load}, holds {held}")
                time.sleep(0.02)


def _snapshot(uow: UnitOfWork) -> tuple[dict[str, int], list[tuple[str, int, int, int]]]:
    running = {str(kind): int(count) for kind, count in uow.connection.execute(RUNNING_BY_TYPE)}
    loads = [(str(w), int(c), int(load), int(h)) for w, c, load, h in uow.connection.execute(LOADS)]
    return running, loads


@pytest.fixture
def cluster_queue(galera_node_urls: list[URL]) -> Iterator[Storage]:
    with open_storage(multi_host(galera_node_urls)) as storage:
        storage.run(_empty)
        yield storage


def _empty(uow: UnitOfWork) -> None:
    for table in ("task_log", "task", "worker", "task_config", "lease"):
        uow.connection.execute(text(f"DELETE FROM {table}"))


def enqueue_work(storage: Storage) -> None:
    storage.task_configs.create(
        TaskConfig(LIMITED, "limited", ExecutorType.FUNCTION, max_concurrent=LIMIT)
    )
    storage.task_configs.create(
        TaskConfig(FREE, "free", ExecutorType.FUNCTION, max_concurrent=1000)
    )
    requests = [TaskRequest(LIMITED if n < LIMITED_TASKS else FREE, {"n": n}) for n in range(TASKS)]
    for start in range(0, TASKS, 500):
        storage.queue.enqueue_many(requests[start : start + 500])


def start_workers(node_urls: list[URL]) -> list[subprocess.Popen[str]]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "asynctaskmanager.worker",
                "--app",
                "tests.cluster.handlers:HANDLERS",
                "--url",
                node_first(node_urls, n % len(node_urls)),
                "--concurrency",
                str(CONCURRENCY),
                "--burst",
                "--log-level",
                "WARNING",
            ],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for n in range(PROCESSES)
    ]


def completed_count(storage: Storage) -> int:
    return count(storage, "SELECT COUNT(*) FROM task WHERE status = 'completed'")


@dataclass
class Outcome:
    seconds: float
    outputs: list[str]
    watch: Watch
    conflicts: int

    def per_task(self, storage: Storage) -> str:
        """Conflicts per claimed task (one 'claimed' log each; a claim takes up to 4)."""
        return f"{self.conflicts / max(1, tasks_claimed(storage)):.3f}"


def run_workers(
    storage: Storage, node_urls: list[URL], during: object = None, kill_at: int | None = None
) -> Outcome:
    watch = Watch(node_first(node_urls, len(node_urls) - 1), {LIMITED: LIMIT, FREE: 1000})
    watcher = threading.Thread(target=watch.run, daemon=True)
    watcher.start()
    conflicts_before = conflicts(node_urls)
    started = time.monotonic()
    workers = start_workers(node_urls)
    try:
        if kill_at is not None:
            assert isinstance(during, GaleraNodes)
            while completed_count(storage) < kill_at:
                assert time.monotonic() - started < RUN_TIMEOUT_S, "no progress before the kill"
                time.sleep(0.1)
            during.kill(1)
        outputs = [worker.communicate(timeout=RUN_TIMEOUT_S)[0] for worker in workers]
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
        watch.stop.set()
        watcher.join(10)
    seconds = time.monotonic() - started
    for worker, output in zip(workers, outputs, strict=True):
        assert worker.returncode == 0, output[-3000:]
    conflicts_after = conflicts(node_urls)
    added = sum(n - conflicts_before.get(port, n) for port, n in conflicts_after.items())
    return Outcome(seconds, outputs, watch, added)


def transient_lines(outcome: Outcome) -> list[str]:
    return [line for output in outcome.outputs for line in output.splitlines() if TRANSIENT in line]


def assert_every_task_completed_once(storage: Storage, outcome: Outcome) -> None:
    def read(uow: UnitOfWork) -> tuple[dict[str, int], int, list[int]]:
        by_status = uow.connection.execute(
            text("SELECT status, COUNT(*) FROM task GROUP BY status")
        )
        statuses = {str(status): int(count) for status, count in by_status}
        completions = uow.connection.execute(
            text(
                "SELECT COUNT(*) FROM task_log WHERE log_type = 'completed' "
                "GROUP BY task_id HAVING COUNT(*) <> 1"
            )
        ).all()
        loads = [
            int(load) for (load,) in uow.connection.execute(text("SELECT current_load FROM worker"))
        ]
        completed_logs = uow.connection.execute(
            text("SELECT COUNT(DISTINCT task_id) FROM task_log WHERE log_type = 'completed'")
        ).scalar_one()
        return statuses, int(completed_logs), [len(completions), *loads]

    statuses, completed_logs, [twice, *loads] = storage.run(read, read_only=True, sync_wait=True)
    assert statuses == {TaskStatus.COMPLETED.value: TASKS}
    assert completed_logs == TASKS
    assert twice == 0
    assert loads == [0] * PROCESSES
    assert outcome.watch.violations == []
    assert outcome.watch.reads > 10
    assert outcome.watch.peak_running.get(LIMITED, 0) <= LIMIT


def test_six_worker_processes_over_three_nodes_complete_every_task_once(
    cluster_queue: Storage, galera_node_urls: list[URL]
) -> None:
    enqueue_work(cluster_queue)
    outcome = run_workers(cluster_queue, galera_node_urls)
    assert_every_task_completed_once(cluster_queue, outcome)
    transient = sum(output.count(TRANSIENT) for output in outcome.outputs)
    print(
        f"\n[galera] {TASKS} tasks, {PROCESSES} processes over {len(galera_node_urls)} nodes: "
        f"{outcome.seconds:.1f} s ({TASKS / outcome.seconds:.0f} tasks/s), peak running "
        f"{outcome.watch.peak_running}, {outcome.watch.reads} watcher reads, "
        f"conflicts {outcome.conflicts} ({outcome.per_task(cluster_queue)} per claimed task), "
        f"transient errors reaching callers {transient}"
    )
    assert transient == 0, [
        line for o in outcome.outputs for line in o.splitlines() if TRANSIENT in line
    ]


def test_the_workers_carry_on_through_the_other_nodes_when_one_is_killed(
    cluster_queue: Storage, galera_node_urls: list[URL], galera_nodes: GaleraNodes
) -> None:
    enqueue_work(cluster_queue)
    outcome = run_workers(cluster_queue, galera_node_urls, galera_nodes, kill_at=TASKS // 3)
    restart_seconds = galera_nodes.restart()
    assert_every_task_completed_once(cluster_queue, outcome)
    lines = transient_lines(outcome)
    unknown = [line for line in lines if "outcome" in line.lower()]
    print(
        f"\n[galera] node 1 SIGKILLed after {TASKS // 3} completions: {TASKS} tasks in "
        f"{outcome.seconds:.1f} s, node back in {restart_seconds:.0f} s; conflicts "
        f"{outcome.conflicts} ({outcome.per_task(cluster_queue)} per claimed task, not "
        "counting the killed node's); transient errors "
        f"reaching callers {len(lines)} ({len(unknown)} of unknown outcome)"
    )
    for line in lines:
        print(f"  {line}")


def test_the_sweep_run_from_every_node_at_once_takes_each_task_back_once(
    cluster_queue: Storage, galera_node_urls: list[URL]
) -> None:
    cluster_queue.task_configs.create(
        TaskConfig(FREE, "free", ExecutorType.FUNCTION, max_concurrent=1000)
    )
    tasks = cluster_queue.queue.enqueue_many([TaskRequest(FREE, {"n": n}) for n in range(300)])
    cluster_queue.queue.register_worker(
        Worker("galera-dead", "dead", "nowhere", WorkerStatus.ONLINE, capacity=1000)
    )
    assert len(cluster_queue.queue.claim("galera-dead", limit=1000)) == 300
    cluster_queue.run(
        lambda uow: uow.connection.execute(
            text(
                "UPDATE worker SET last_heartbeat = last_heartbeat - INTERVAL 1 HOUR "
                "WHERE worker_id = 'galera-dead'"
            )
        )
    )
    storages = [open_storage(url) for url in galera_node_urls]
    barrier = threading.Barrier(len(storages))
    reports: list[list[str]] = []
    errors: list[BaseException] = []

    def sweep(storage: Storage) -> None:
        try:
            barrier.wait()
            reports.append(storage.queue.sweep().requeued)
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=sweep, args=(s,)) for s in storages]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
    finally:
        for storage in storages:
            storage.close()
    assert errors == []
    requeued = [task_id for report in reports for task_id in report]
    assert sorted(requeued) == sorted(task.task_id for task in tasks)
    assert count(cluster_queue, "SELECT COUNT(*) FROM task_log WHERE log_type = 'rescued'") == 300
    print(f"\n[galera] sweep from 3 nodes at once: requeued per node {[len(r) for r in reports]}")
