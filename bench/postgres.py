"""PostgreSQL: our store, the raw psycopg floor and procrastinate, in one run.

``python -m bench.postgres [--rounds 3] [--bulk 10000] [--tasks 4000] [--processes 4]``
``[--postgres-url postgresql://postgres@127.0.0.1/postgres]``

- bulk enqueue: one call of ``--bulk`` tasks. Ours: ``queue.enqueue_many`` (building the
  ``TaskRequest``s included); raw: ``bench.ops.RawDriver.enqueue_many`` (the same statements:
  config and clock, one executemany of tasks, one of 'created' log rows, commit);
  procrastinate: ``task.batch_defer`` of the same payloads.
- claim+complete, N processes: ``--tasks`` tasks queued beforehand (untimed), then N worker
  processes drain them, one task at a time. Ours and raw: ``bench.workers`` (claim 1,
  complete, until a claim comes back empty); also ours with ``queue.complete_and_claim``
  (one transaction per task; its row compares it with the same raw and procrastinate
  figures). procrastinate: N processes each running
  ``app.run_worker(wait=False, concurrency=1)`` on a no-op task (fetch a job, run it, mark
  it succeeded), jobs kept (``delete_jobs="never"``), no LISTEN (nothing arrives meanwhile).

Contenders are interleaved round by round and the best round counts; the ratios from one
run are the numbers to read. Each contender has a database of its own on the server
(``atm_bench_pg``, ``atm_bench_pg_raw``, ``atm_bench_pg_procrastinate``), created and
dropped here.

What procrastinate does not do, for a fair reading: no audit row per transition, no worker
rows or load accounting, no per-type max_concurrent; it does keep a job row and its events
(procrastinate_events, written by triggers) and runs the task through its own executor.
"""

from __future__ import annotations

import argparse
import multiprocessing
import time
import uuid
from collections.abc import Callable
from typing import Any

from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool

from asynctaskmanager import open_storage
from asynctaskmanager.infrastructure.engine import resolve_url
from bench.common import TABLES, Locator, payload, pending
from bench.ops import Ours, RawDriver
from bench.procrastinate_peer import (
    procrastinate_app,
    procrastinate_count,
    procrastinate_drain,
    procrastinate_empty,
)
from bench.workers import run_processes

SPAWN = multiprocessing.get_context("spawn")


# --- the databases ---------------------------------------------------------------------------


class Server:
    def __init__(self, url: str) -> None:
        self.url = resolve_url(url)
        self.suffix = uuid.uuid4().hex[:6]
        self.names: list[str] = []

    def _admin(self, sql: str) -> None:
        engine = create_engine(self.url, poolclass=NullPool, isolation_level="AUTOCOMMIT")
        try:
            with engine.connect() as connection:
                connection.execute(text(sql))
        finally:
            engine.dispose()

    def database(self, role: str) -> str:
        name = f"atm_bench_pg_{role}_{self.suffix}"
        self._admin(f"CREATE DATABASE {name}")
        self.names.append(name)
        return self.url.set(database=name).render_as_string(hide_password=False)

    def version(self) -> str:
        engine = create_engine(self.url, poolclass=NullPool)
        try:
            with engine.connect() as connection:
                return str(connection.execute(text("SHOW server_version")).scalar_one())
        finally:
            engine.dispose()

    def drop_all(self) -> None:
        for name in self.names:
            self._admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def empty_ours(url: str) -> None:
    engine = create_engine(resolve_url(url), poolclass=NullPool)
    try:
        with engine.begin() as connection:
            for table in TABLES:
                if table != "task_config":
                    connection.execute(text(f"TRUNCATE {table}"))
    finally:
        engine.dispose()


# --- the measurements ------------------------------------------------------------------------


def bulk_rates(urls: dict[str, str], n: int, rounds: int) -> dict[str, float]:
    ours = Ours(Locator("postgresql", url=urls["ours"]))
    raw = RawDriver(Locator("postgresql", url=urls["raw"]))
    app = procrastinate_app(urls["procrastinate"])
    rates: dict[str, list[float]] = {"ours": [], "raw": [], "procrastinate": []}

    def timed(action: Callable[[], Any]) -> float:
        started = time.perf_counter()
        action()
        return n / (time.perf_counter() - started)

    with app.open():
        task = app.tasks["bench"]
        for _ in range(rounds):
            empty_ours(urls["ours"])
            rates["ours"].append(timed(lambda: ours.enqueue_many(n)))
            empty_ours(urls["raw"])
            rates["raw"].append(timed(lambda: raw.enqueue_many(n)))
            procrastinate_empty(urls["procrastinate"])
            rates["procrastinate"].append(
                timed(lambda: task.batch_defer(*[payload(i) for i in range(n)]))
            )
    ours.close()
    raw.close()
    return {name: max(values) for name, values in rates.items()}


def process_rates(urls: dict[str, str], n: int, processes: int, rounds: int) -> dict[str, float]:
    rates: dict[str, list[float]] = {"ours": [], "ours-next": [], "raw": [], "procrastinate": []}
    app = procrastinate_app(urls["procrastinate"])
    for _ in range(rounds):
        for kind in ("ours", "ours-next", "raw"):
            url = urls["raw" if kind == "raw" else "ours"]
            empty_ours(url)
            filler = Ours(Locator("postgresql", url=url), seed=False)
            filler.load(pending(n))
            filler.close()
            done, seconds = run_processes(kind, Locator("postgresql", url=url), processes)
            assert done == n, f"{kind}: {done} of {n}"
            rates[kind].append(done / seconds)
        procrastinate_empty(urls["procrastinate"])
        with app.open():
            app.tasks["bench"].batch_defer(*[payload(i) for i in range(n)])
        seconds = procrastinate_drain(urls["procrastinate"], processes)
        succeeded = procrastinate_count(urls["procrastinate"], "succeeded")
        assert succeeded == n, f"procrastinate: {succeeded} of {n}"
        rates["procrastinate"].append(n / seconds)
    return {name: max(values) for name, values in rates.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--postgres-url", default="postgresql://postgres@127.0.0.1/postgres")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--bulk", type=int, default=10_000)
    parser.add_argument("--tasks", type=int, default=4000)
    parser.add_argument("--processes", type=int, default=4)
    args = parser.parse_args()
    server = Server(args.postgres_url)
    try:
        urls = {role: server.database(role) for role in ("ours", "raw", "procrastinate")}
        for role in ("ours", "raw"):
            open_storage(urls[role], upgrade=True).close()
        app = procrastinate_app(urls["procrastinate"])
        with app.open():
            app.schema_manager.apply_schema()
        bulk = bulk_rates(urls, args.bulk, args.rounds)
        procs = process_rates(urls, args.tasks, args.processes, args.rounds)
        version = server.version()
    finally:
        server.drop_all()
    print(f"PostgreSQL {version}; best of {args.rounds} rounds; tasks/s")
    print("| operation | ours | raw psycopg | procrastinate | ours/raw | ours/procrastinate |")
    print("|---|---|---|---|---|---|")
    for label, rates in (
        (f"bulk enqueue ({args.bulk:,} in one call)", bulk),
        (f"claim+complete, {args.processes} processes ({args.tasks:,} tasks)", procs),
        (
            f"complete_and_claim loop, {args.processes} processes",
            procs | {"ours": procs["ours-next"]},
        ),
    ):
        print(
            f"| {label} | {rates['ours']:,.0f} | {rates['raw']:,.0f} | "
            f"{rates['procrastinate']:,.0f} | {rates['ours'] / rates['raw']:.2f} | "
            f"{rates['ours'] / rates['procrastinate']:.2f} |"
        )


if __name__ == "__main__":
    main()
