"""Latency from enqueue to claim for an idle worker: LISTEN/NOTIFY against polling.

``python -m bench.wakeup [--tasks N] [--postgres-url URL] [--mysql-url URL]``

A worker process makes a waiter, then loops: claim; if nothing came back, wait (timeout 5 s).
The parent enqueues N tasks one at a time, at random gaps of 50 to 250 ms (an idle queue:
the worker is always waiting when a task arrives), each with the wall-clock time just
before its enqueue. The worker records the time it holds the claimed task; the latency is
the difference (one machine, one clock). Cases: PostgreSQL listening, the same PostgreSQL
database polled (the profile without its work channel), the SQLite file and MariaDB polled.
Each case works in a database of its own, created and dropped here.
"""

from __future__ import annotations

import argparse
import multiprocessing
import random
import statistics
import tempfile
import time
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any

from sqlalchemy import URL, create_engine, text
from sqlalchemy.pool import NullPool

from asynctaskmanager import ExecutorType, Storage, TaskConfig, Worker, open_storage
from asynctaskmanager.infrastructure.engine import Database, connect, resolve_url

TASK_TYPE = "wake"
SPAWN = multiprocessing.get_context("spawn")


def open_case(url: str, polling: bool) -> Storage:
    database = connect(url)
    if polling:
        database = Database(database.engine, replace(database.profile, work_channel=None))
    return Storage(database)


def worker(url: str, polling: bool, tasks: int, ready: Any, results: Any) -> None:
    storage = open_case(url, polling)
    storage.queue.register_worker(Worker("w1", "bench", "h:1", capacity=tasks + 1))
    waiter = storage.queue.work_waiter()
    ready.set()
    latencies: list[float] = []
    while len(latencies) < tasks:
        claimed = storage.queue.claim("w1")
        if not claimed:
            waiter.wait(5.0)
            continue
        now = time.time()
        for task in claimed:
            latencies.append(now - task.payload["sent"])
            storage.queue.complete(task)
    storage.close()
    results.put(latencies)


def measure(url: str, polling: bool, tasks: int) -> list[float]:
    storage = open_storage(url, upgrade=True)
    storage.task_configs.create(TaskConfig(TASK_TYPE, "wake", ExecutorType.FUNCTION))
    ready, results = SPAWN.Event(), SPAWN.Queue()
    process = SPAWN.Process(target=worker, args=(url, polling, tasks, ready, results))
    process.start()
    ready.wait(60)
    time.sleep(0.5)  # into its first wait
    rng = random.Random(7)
    for _ in range(tasks):
        time.sleep(rng.uniform(0.05, 0.25))
        storage.queue.enqueue(TASK_TYPE, {"sent": time.time()})
    latencies: list[float] = results.get(timeout=120)
    process.join(30)
    storage.close()
    return latencies


def server_database(server: URL, name: str) -> tuple[str, Any]:
    """A database of its own on the server, and how to drop it."""
    postgres = server.get_backend_name() == "postgresql"
    admin = create_engine(
        server, poolclass=NullPool, **({"isolation_level": "AUTOCOMMIT"} if postgres else {})
    )
    with admin.begin() as connection:
        connection.execute(text(f"CREATE DATABASE {name}"))

    def drop() -> None:
        with admin.begin() as connection:
            force = " WITH (FORCE)" if postgres else ""
            connection.execute(text(f"DROP DATABASE IF EXISTS {name}{force}"))
        admin.dispose()

    return server.set(database=name).render_as_string(hide_password=False), drop


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", type=int, default=40)
    parser.add_argument("--postgres-url", default="postgresql://postgres@127.0.0.1/postgres")
    parser.add_argument("--mysql-url", default="mysql://root@127.0.0.1/test")
    args = parser.parse_args()
    suffix = uuid.uuid4().hex[:8]
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        postgres = resolve_url(args.postgres_url)
        mysql = resolve_url(args.mysql_url)
        cases: list[tuple[str, str | None, bool]] = [
            ("postgresql, LISTEN/NOTIFY", None, False),
            ("postgresql, polling", None, True),
            ("sqlite file, polling", f"sqlite:///{Path(folder) / 'wake.db'}", True),
            ("mariadb, polling", None, True),
        ]
        for index, (label, url, polling) in enumerate(cases):
            drop = None
            if url is None:
                server = postgres if label.startswith("postgresql") else mysql
                url, drop = server_database(server, f"atm_bench_wake_{suffix}_{index}")
            try:
                latencies = sorted(measure(url, polling, args.tasks))
            finally:
                if drop is not None:
                    drop()
            p95 = latencies[max(0, round(0.95 * len(latencies)) - 1)]
            rows.append(
                f"| {label} | {len(latencies)} | {statistics.median(latencies) * 1000:.1f} "
                f"| {p95 * 1000:.1f} | {latencies[-1] * 1000:.1f} |"
            )
    print("| case | tasks | median ms | p95 ms | max ms |")
    print("|---|---|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
