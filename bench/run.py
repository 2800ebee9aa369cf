"""``python -m bench.run``: measure the store beside the raw drivers and kombu, in one run.

Every ratio compares numbers taken in the same run, on the same machine and database
server, with the contenders interleaved round by round (ours, raw, kombu, ours, raw, ...)
so that load from elsewhere falls on all of them alike. A rate is the best of its rounds.

Options: ``--scale-1m`` adds the one-million-row claim latency case (minutes: it loads a
million rows into SQLite and MariaDB); ``--quick`` is a smoke run with tiny sizes;
``--backends memory,sqlite,mariadb`` picks backends; ``--out`` the results file.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Mapping
from functools import partial
from pathlib import Path
from typing import Any

from bench import machine, memory, report, scale
from bench.common import BACKENDS, TASK_TYPE, Locator, Site, pending, percentile, timed_loop
from bench.ops import Ours, RawDriver
from bench.peer import Kombu, empty_kombu
from bench.report import Latency, Results
from bench.workers import BATCH, RUNTIME_CONCURRENCY, run_latency, run_processes

RESULTS_FILE = Path(__file__).resolve().parent / "results.md"
# The backends with worker-process rows: one database that several processes share.
# PostgreSQL goes here once bench.common (Site.fresh, Raw), bench.ops (RawDriver's SQL) and
# _kombu_locator know it; bench_processes needs nothing else.
PROCESS_BACKENDS = ("sqlite", "mariadb")
# The batched loops and the runtime: rounds get this many times the one-worker rate's work.
BATCHED_SPEEDUP = 5
# Enqueue-to-start latency: the producer enqueues at half the runtime's measured
# throughput (a loaded, not saturated, fleet), at most this many tasks a second.
LATENCY_MAX_RATE = 400.0
BATCHED_KINDS = ("ours-batch", "raw-batch", "ours-runtime")


class Plan:
    """Sizes and time boxes; ``quick`` shrinks everything for a smoke run."""

    def __init__(self, quick: bool, rounds: int | None) -> None:
        self.quick = quick
        self.rounds = rounds or (1 if quick else 3)
        self.seconds = 0.15 if quick else 0.8  # per contender per round
        self.bulk = 500 if quick else 10_000
        self.memory_tasks = 2_000 if quick else 100_000
        self.scale_sizes = [1_000, 5_000] if quick else [10_000, 100_000]
        self.scale_rounds = 2 if quick else 12
        self.procs_seconds = 0.5 if quick else 3.0

    def max_ops(self, backend: str) -> int:
        cap = {"memory": 3000, "sqlite": 2000, "mariadb": 1000}[backend]
        return 200 if self.quick else cap


def log(message: str) -> None:
    print(message, flush=True)


# --- helpers -----------------------------------------------------------------------------------


def _kombu_locator(site: Site, backend: str, role: str = "kombu") -> Locator:
    if backend == "sqlite":
        return Locator("sqlite", path=f"{site.dir}/{role}-{time.monotonic_ns()}.db")
    locator = site.mysql_database("atm_bench_kombu", migrate=False)
    empty_kombu(locator)
    return locator


def _fill_kombu(locator: Locator, n: int) -> None:
    """Untimed: n messages, by publishing a few and copying them in SQL."""
    from sqlalchemy import create_engine, text

    kombu = Kombu(locator)
    for i in range(min(n, 20)):
        kombu.publish(i)
    kombu.close()
    url = f"sqlite:///{locator.path}" if locator.backend == "sqlite" else str(locator.url)
    engine = create_engine(url)
    try:
        while True:
            with engine.begin() as connection:
                have = connection.execute(text("SELECT count(*) FROM kombu_message")).scalar_one()
                if have >= n:
                    return
                # On MariaDB kombu's ids come from a SEQUENCE, on SQLite from AUTOINCREMENT.
                new_id = "NEXTVAL(message_id_sequence), " if locator.backend == "mariadb" else ""
                id_column = "id, " if new_id else ""
                connection.execute(
                    text(
                        f"INSERT INTO kombu_message ({id_column}visible, timestamp, payload,"
                        f" version, queue_id) SELECT {new_id}visible, timestamp, payload, version,"
                        f" queue_id FROM kombu_message LIMIT {min(have, n - have)}"
                    )
                )
    finally:
        engine.dispose()


def _best(rates: list[float]) -> float | None:
    return max(rates) if rates else None


def _rounds(
    plan: Plan, contenders: Mapping[str, Callable[[], float]], rounds: int | None = None
) -> dict[str, float | None]:
    """Run each contender once per round, interleaved; the best rate of each."""
    rates: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(rounds or plan.rounds):
        for name, measure_once in contenders.items():
            rates[name].append(measure_once())
    return {name: _best(values) for name, values in rates.items()}


def _rate(op: Callable[[int], Any], max_ops: int, seconds: float) -> float:
    done, elapsed = timed_loop(op, max_ops, seconds)
    return done / elapsed


# --- the operations ----------------------------------------------------------------------------


def bench_writes_and_reads(site: Site, backend: str, plan: Plan, results: Results) -> None:
    """enqueue one per transaction, bulk enqueue, get by id: ours, raw (and kombu publish)."""
    ours = Ours(site.fresh(backend, "ours"))
    raw = RawDriver(site.fresh(backend, "raw"), site.memory_template())
    kombu = Kombu(_kombu_locator(site, backend)) if backend != "memory" else None
    max_ops, seconds = plan.max_ops(backend), plan.seconds
    counter = iter(range(10**9))

    contenders: dict[str, Callable[[], float]] = {
        "ours": lambda: _rate(lambda i: ours.enqueue(next(counter)), max_ops, seconds),
        "raw": lambda: _rate(lambda i: raw.enqueue(next(counter)), max_ops, seconds),
    }
    if kombu is not None:
        contenders["kombu"] = lambda: _rate(kombu.publish, max_ops, seconds)
    best = _rounds(plan, contenders)
    results.add("enqueue, 1 per transaction", backend, best, kombu_op="publish")
    log(f"  enqueue        {report.brief(best)}")

    def bulk(impl: Any) -> float:
        start = time.perf_counter()
        impl.enqueue_many(plan.bulk, next(counter))
        return plan.bulk / (time.perf_counter() - start)

    best = _rounds(plan, {"ours": lambda: bulk(ours), "raw": lambda: bulk(raw)})
    results.add(f"bulk enqueue {plan.bulk:,} (per task)", backend, best)
    log(f"  bulk enqueue   {report.brief(best)}")

    ids = {"ours": ours.ids(5000), "raw": raw.ids(5000)}

    def get(impl: Any) -> float:
        keys = ids[impl.name]
        return _rate(lambda i: impl.get(keys[i % len(keys)]), max_ops * 2, seconds)

    best = _rounds(plan, {"ours": lambda: get(ours), "raw": lambda: get(raw)})
    results.add("get by id", backend, best)
    log(f"  get by id      {report.brief(best)}")
    ours.close()
    raw.close()
    if kombu is not None:
        kombu.close()


def bench_claims(site: Site, backend: str, plan: Plan, results: Results) -> dict[str, float]:
    """Claim+complete one at a time (1 worker), and claim-only in batches of 1 and of 10."""
    max_ops, seconds = plan.max_ops(backend), plan.seconds
    stock = max_ops * (plan.rounds * 5 + 4) + 200
    ours = Ours(site.fresh(backend, "ours"))
    raw = RawDriver(site.fresh(backend, "raw"), site.memory_template())
    for impl in (ours, raw):
        impl.load(pending(stock))
        impl.register("w1")
    kombu = None
    if backend != "memory":
        kombu_at = _kombu_locator(site, backend)
        _fill_kombu(kombu_at, max_ops * plan.rounds + 50)
        kombu = Kombu(kombu_at)

    def cycle(impl: Any) -> Callable[[int], None]:
        def op(_i: int) -> None:
            for task in impl.claim("w1", 1):
                impl.complete(task)

        return op

    contenders: dict[str, Callable[[], float]] = {
        "ours": lambda: _rate(cycle(ours), max_ops, seconds),
        "raw": lambda: _rate(cycle(raw), max_ops, seconds),
    }
    if kombu is not None:
        contenders["kombu"] = lambda: _rate(lambda i: kombu.get_ack(), max_ops, seconds)
    best = _rounds(plan, contenders)
    results.add("claim+complete, 1 worker", backend, best, kombu_op="get+ack")
    log(f"  claim+complete {report.brief(best)}")
    one_worker = {k: v for k, v in best.items() if v}

    def claims(impl: Any, limit: int) -> float:
        """Claim-only, per task; every 100 tasks the claimed ones are finished (untimed)."""
        done, elapsed = 0, 0.0
        while elapsed < seconds and done < max_ops * 2:
            start = time.perf_counter()
            got = 0
            for _ in range(100 // limit):
                got += len(impl.claim("w1", limit))
            elapsed += time.perf_counter() - start
            done += got
            impl.release_running()
            if got == 0:
                break
        return done / elapsed

    # Batches of 1 and of 10 interleaved in the same rounds: their ratio is a target.
    best = _rounds(
        plan,
        {
            "ours x1": lambda: claims(ours, 1),
            "ours x10": lambda: claims(ours, 10),
            "raw x1": lambda: claims(raw, 1),
            "raw x10": lambda: claims(raw, 10),
        },
        plan.rounds + 1,
    )
    best1 = {"ours": best["ours x1"], "raw": best["raw x1"]}
    best10 = {"ours": best["ours x10"], "raw": best["raw x10"]}
    results.add("claim 1 at a time (per task)", backend, best1)
    results.add("claim 10 at a time (per task)", backend, best10)
    log(f"  claim x1       {report.brief(best1)}")
    log(f"  claim x10      {report.brief(best10)}")
    results.batch[backend] = (best1, best10)
    ours.close()
    raw.close()
    if kombu is not None:
        kombu.close()
    return one_worker


def bench_processes(
    site: Site,
    backend: str,
    plan: Plan,
    results: Results,
    one_worker: dict[str, float],
    processes: int = 4,
) -> None:
    """Claim+complete with N worker processes, each with its own storage or connection.

    Then, for reference, the same loop claiming 10 at a time (ours and raw; kombu's get takes
    one message per transaction, whatever Celery's prefetch).
    """
    rounds = 2 if backend == "mariadb" and not plan.quick else 1

    def once(kind: str, batch: int) -> float:
        # Enough work for about procs_seconds at twice the one-worker rate (more in batches).
        contender = kind.split("-")[0]  # ours, raw or kombu
        speedup = BATCHED_SPEEDUP if kind in BATCHED_KINDS else (3 if batch > 1 else 1)
        rate = one_worker.get(contender, 200) * speedup
        n = int(max(200, min(30_000, rate * 2 * plan.procs_seconds)))
        if kind == "kombu":
            locator = _kombu_locator(site, backend)
            _fill_kombu(locator, n)
        else:
            locator = site.fresh(backend, contender)
            impl: Any = RawDriver(locator) if contender == "raw" else Ours(locator)
            impl.load(pending(n))
            impl.close()
        done, elapsed = run_processes(kind, locator, processes, batch)
        if done != n:
            raise RuntimeError(f"{kind}: {done} of {n} tasks finished")
        return done / elapsed

    kinds = ("ours", "raw", "kombu")
    best = _rounds(plan, {kind: partial(once, kind, 1) for kind in kinds}, rounds)
    results.add(f"claim+complete, {processes} processes", backend, best, kombu_op="get+ack")
    results.processes[backend] = best
    log(f"  {processes} processes    {report.brief(best)}")
    # Two variants against the same kombu figure: claiming 10 at a time, and each
    # completion claiming the next task in its own transaction (ours only: the raw floor
    # has no such loop).
    variants = {
        f"claim 10 + complete each, {processes} processes (per task)": {
            kind: partial(once, kind, 10) for kind in kinds[:2]
        },
        f"complete_and_claim loop, {processes} processes": {"ours": partial(once, "ours-next", 1)},
    }
    for label, contenders in variants.items():
        rates = _rounds(plan, contenders, 1)
        rates["kombu"] = best["kombu"]
        results.add(label, backend, rates, kombu_op="get+ack")
        log(f"  ... {label.split(',')[0]}: {report.brief(rates)}")

    # Issue 14: the batched loop against its raw floor, and the worker runtime end to end,
    # interleaved with kombu's get+ack in the same rounds.
    batched = _rounds(
        plan, {kind: partial(once, kind, BATCH) for kind in (*BATCHED_KINDS, "kombu")}, rounds
    )
    log(f"  batched        {report.brief(batched)}")
    results.add(
        f"batched: claim 10, complete_many_and_claim, {processes} processes",
        backend,
        {"ours": batched["ours-batch"], "raw": batched["raw-batch"], "kombu": batched["kombu"]},
        kombu_op="get+ack",
    )
    results.add(
        f"worker runtime, {processes} processes x {RUNTIME_CONCURRENCY} threads"
        " (raw: the raw batched loop)",
        backend,
        {"ours": batched["ours-runtime"], "raw": batched["raw-batch"], "kombu": batched["kombu"]},
        kombu_op="get+ack",
    )
    runtime_rate = batched["ours-runtime"] or 200.0
    bench_latency(site, backend, plan, results, min(LATENCY_MAX_RATE, runtime_rate / 2), processes)


def bench_latency(
    site: Site, backend: str, plan: Plan, results: Results, rate: float, processes: int
) -> None:
    """p95 enqueue-to-start latency: runtime workers serve a producer enqueuing at ``rate``."""
    from sqlalchemy import text

    locator = site.fresh(backend, "ours")
    ours = Ours(locator)
    unfinished = text("SELECT count(*) FROM task WHERE status <> 'completed'")

    def count_unfinished() -> int:
        return int(ours.storage.run(lambda uow: uow.connection.execute(unfinished).scalar_one()))

    try:
        latencies, achieved = run_latency(
            locator,
            processes,
            rate,
            plan.procs_seconds,
            lambda payload: ours.queue.enqueue(TASK_TYPE, payload),
            count_unfinished,
        )
    finally:
        ours.close()
    entry = Latency(
        backend,
        processes,
        RUNTIME_CONCURRENCY,
        rate,
        achieved,
        len(latencies),
        percentile(latencies, 0.5) * 1000,
        percentile(latencies, 0.95) * 1000,
        max(latencies) * 1000,
    )
    results.latency.append(entry)
    log(
        f"  latency at {achieved:.0f}/s: median {entry.median_ms:.1f} ms,"
        f" p95 {entry.p95_ms:.1f} ms, max {entry.max_ms:.1f} ms"
    )


def bench_memory(site: Site, plan: Plan, results: Results, tracemalloc: bool) -> None:
    modes = ["rss", "tracemalloc"] if tracemalloc else ["rss"]
    for backend in ("sqlite",):
        for impl in ("ours", "raw"):
            for mode in modes:
                locator = site.sqlite_copy(f"mem-{impl}")
                outcome = memory.measure(impl, mode, locator, plan.memory_tasks)
                results.memory.append({"backend": backend, **outcome})
                log(f"  {impl} {mode}: {outcome['peak_mb']:.1f} MB in {outcome['seconds']:.1f}s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__)
    parser.add_argument("--scale-1m", action="store_true", help="add the 1,000,000-row case")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run")
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--backends", default=",".join(BACKENDS))
    parser.add_argument("--tracemalloc", action="store_true", help="also tracemalloc (slow)")
    parser.add_argument("--skip", default="", help="comma list: ops,procs,scale,memory")
    parser.add_argument("--out", type=Path, default=RESULTS_FILE)
    parser.add_argument("--mysql-url", default=None, help="server URL (default: env or local)")
    parser.add_argument(
        "--db-suffix", default="", help="appended to the server's database names (atm_bench...)"
    )
    args = parser.parse_args(argv)
    plan = Plan(args.quick, args.rounds)
    skip = {part for part in args.skip.split(",") if part}
    started = time.perf_counter()
    with Site(args.mysql_url, db_suffix=args.db_suffix) as site:
        backends = [b for b in args.backends.split(",") if b]
        if "mariadb" in backends and not site.mysql_available:
            backends.remove("mariadb")
        results = Results(machine.describe(site.mysql_version()), plan.quick, args.scale_1m)
        log(f"bench on {results.machine['cpu']} x{results.machine['cores']}")
        one_worker: dict[str, dict[str, float]] = {}
        for backend in backends:
            if "ops" in skip:
                continue
            log(f"[{backend}]")
            bench_writes_and_reads(site, backend, plan, results)
            one_worker[backend] = bench_claims(site, backend, plan, results)
        if "procs" not in skip:
            for backend in backends:
                if backend not in PROCESS_BACKENDS:
                    continue  # an in-memory database lives in one process
                log(f"[{backend}] 4 worker processes")
                bench_processes(site, backend, plan, results, one_worker.get(backend, {}))
        if "scale" not in skip:
            sizes = plan.scale_sizes + ([1_000_000] if args.scale_1m else [])
            for backend in backends:
                if backend == "memory":
                    continue
                log(f"[{backend}] claim latency at {', '.join(f'{s:,}' for s in sizes)} rows")
                cases = scale.measure(site, backend, sizes, rounds=plan.scale_rounds)
                results.scale.extend(cases)
                for case in cases:
                    log(
                        f"  {case.rows:>9,} rows: median {case.median_ms:.2f} ms,"
                        f" p95 {case.p95_ms:.2f} ms (loaded in {case.load_seconds:.1f}s)"
                    )
        if "memory" not in skip:
            log(f"[memory] bulk enqueue of {plan.memory_tasks:,} tasks")
            bench_memory(site, plan, results, args.tracemalloc)
    results.seconds = time.perf_counter() - started
    text = report.render(results)
    print()
    print(text)
    if not args.quick or args.out != RESULTS_FILE:
        args.out.write_text(text, encoding="utf-8")
        log(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
