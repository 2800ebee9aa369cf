"""Monthly partitions against one table, on MariaDB, in one run (issue 11's benchmark).

N tasks (default 10,000,000; ``--rows 1000000`` for a shorter run) spread over 24 months, ids
made at each row's created_at. Two copies: ``plain`` (the library's schema) and
``partitioned`` (the same rows, converted by ``partitions.enable``). Measured:

- claim p95 (``queue.claim``, end to end) on both, and on a partitioned 10k-row table (the
  target: claim p95 at N within 1.2 x its value at 10k);
- get-by-id p95 (``tasks.get``) on both (target: partitioned within 1.2 x plain);
- removing the oldest month: rotation's DROP PARTITION against ``queue.prune``'s batched
  DELETE of the same rows (target: at least 20 x faster);
- the rotation's worst writer stall: enqueue latency while four workers claim and complete
  and rotation adds and drops months; and a writer's stall while a rotation waits behind an
  open claim transaction (bounded by the lock wait).

Not part of CI. ``python -m bench.partitions [--rows N] [--samples N] [--keep]``; or
``make bench-partitions PARTITION_ARGS=--rows=1000000``.
"""

from __future__ import annotations

import argparse
import random
import threading
import time
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import text

from asynctaskmanager import Storage, open_storage
from asynctaskmanager.partitions import enable, rotate
from asynctaskmanager.partitions.months import add_months, month_start
from asynctaskmanager.queue.claim import claim_statement
from bench.common import TASK_TYPE, Site, register_ours, seed_ours
from bench.partition_keys import load, p95_ms


def _analyze(storage: Storage) -> None:
    with storage.engine.begin() as connection:
        connection.execute(text("ANALYZE TABLE task")).all()


def latencies(storage: Storage, ids: list[str], samples: int, tag: str) -> dict[str, float]:
    rng = random.Random(5)
    probe = [rng.choice(ids) for _ in range(samples)]
    worker = f"bench-{tag}"
    register_ours(storage, worker)
    storage.queue.claim(worker, 1)
    return {
        "get-by-id p95 ms": p95_ms(lambda i: storage.tasks.get(probe[i]), samples),
        "claim p95 ms": p95_ms(lambda i: storage.queue.claim(worker, 1), samples // 2),
    }


def writer_stall_under_workers(storage: Storage, now: datetime) -> float:
    """Worst enqueue latency (s) while 4 workers run and rotation adds and drops months."""
    stop = threading.Event()
    worst = [0.0]

    def worker(name: str) -> None:
        register_ours(storage, name)
        while not stop.is_set():
            for task in storage.queue.claim(name, 5):
                storage.queue.complete(task, {"ok": True})

    def writer() -> None:
        while not stop.is_set():
            start = time.perf_counter()
            storage.queue.enqueue(TASK_TYPE, {"n": 1})
            worst[0] = max(worst[0], time.perf_counter() - start)

    threads = [threading.Thread(target=worker, args=(f"stall-w{i}",)) for i in range(4)]
    threads.append(threading.Thread(target=writer))
    for thread in threads:
        thread.start()
    time.sleep(1)
    for ahead, retain in ((4, 21), (5, 20), (6, 19)):
        report = rotate(storage, ahead=ahead, retain_months=retain, now=now)
        print("  rotation:", "; ".join(report.lines()))
        time.sleep(0.5)
    stop.set()
    for thread in threads:
        thread.join()
    return worst[0]


def writer_stall_behind_open_claim(storage: Storage, lock_wait: int) -> tuple[float, bool]:
    """A claim transaction stays open; rotation queues its ALTER; how long does a writer wait?"""
    blocker = storage.engine.connect()
    transaction = blocker.begin()
    blocker.execute(claim_statement([TASK_TYPE], 1, skip_locked=True)).all()
    result: dict[str, Any] = {}
    rotator = threading.Thread(
        target=lambda: result.update(
            report=rotate(storage, ahead=8, retain_months=18, lock_wait_seconds=lock_wait)
        )
    )
    rotator.start()
    time.sleep(0.3)
    start = time.perf_counter()
    storage.queue.enqueue(TASK_TYPE, {"n": 2})
    stalled = time.perf_counter() - start
    rotator.join()
    transaction.rollback()
    blocker.close()
    return stalled, not result["report"].complete


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--samples", type=int, default=2000)
    parser.add_argument("--lock-wait", type=int, default=2)
    parser.add_argument("--keep", action="store_true")
    parser.add_argument("--mysql-url", default=None)
    args = parser.parse_args(argv)
    now = datetime.now(timezone.utc).replace(microsecond=0)
    rows: dict[str, dict[str, float]] = {}
    with Site(args.mysql_url, keep=args.keep) as site:
        small_url = site.mysql_database("atm_bench_part_10k", fresh=True).url
        plain_url = site.mysql_database("atm_bench_part_plain", fresh=True).url
        part_url = site.mysql_database("atm_bench_part", fresh=True).url
        assert small_url and plain_url and part_url
        small = open_storage(small_url)
        seed_ours(small)
        _seconds, small_ids = load(small, 10_000, now)
        enable(small)
        _analyze(small)
        plain = open_storage(plain_url)
        seed_ours(plain)
        seconds, ids = load(plain, args.rows, now)
        print(f"loaded {args.rows:,} rows in {seconds:.0f} s")
        _analyze(plain)
        part = open_storage(part_url)
        with part.engine.begin() as connection:
            for table in ("task_config", "task"):
                connection.execute(
                    text(f"INSERT INTO {table} SELECT * FROM atm_bench_part_plain.{table}")
                )
        start = time.perf_counter()
        enable(part, lock_wait_seconds=args.lock_wait)
        convert = time.perf_counter() - start
        print(f"enable() converted {args.rows:,} rows in {convert:.1f} s")
        _analyze(part)
        rows["partitioned, 10k rows"] = latencies(small, small_ids, args.samples, "s")
        rows["plain"] = latencies(plain, ids, args.samples, "p")
        rows["partitioned"] = latencies(part, ids, args.samples, "q")

        # The oldest month is partial (the rows start mid-month): remove it untimed, then
        # time the removal of the next, a full month.
        for retain in (23, 22):
            cutoff = add_months(month_start(now), -retain)
            age = now - cutoff + (datetime.now(timezone.utc) - now)
            if retain == 23:
                plain.queue.prune(age)
                rotate(part, ahead=3, retain_months=retain, now=now)
        start = time.perf_counter()
        pruned = plain.queue.prune(age)
        delete_s = time.perf_counter() - start
        start = time.perf_counter()
        report = rotate(part, ahead=3, retain_months=22, now=now)
        drop_s = time.perf_counter() - start
        print(f"prune deleted {pruned.tasks:,} tasks in {delete_s:.2f} s;"
              f" rotation: {'; '.join(report.lines())} in {drop_s:.2f} s")  # fmt: skip
        stall = writer_stall_under_workers(part, now)
        blocked, gave_up = writer_stall_behind_open_claim(part, args.lock_wait)
        for storage in (small, plain, part):
            storage.close()
    print()
    print(f"| {args.rows:,} tasks over 24 months | get-by-id p95 ms | claim p95 ms |")
    print("|---|---|---|")
    for name, values in rows.items():
        print(f"| {name} | {values['get-by-id p95 ms']:.2f} | {values['claim p95 ms']:.2f} |")
    get_ratio = rows["partitioned"]["get-by-id p95 ms"] / rows["plain"]["get-by-id p95 ms"]
    claim_ratio = (
        rows["partitioned"]["claim p95 ms"] / rows["partitioned, 10k rows"]["claim p95 ms"]
    )
    print()
    print(f"get-by-id p95 partitioned / plain: {get_ratio:.2f} (target <= 1.2)")
    print(f"claim p95 partitioned at {args.rows:,} / at 10k: {claim_ratio:.2f} (target <= 1.2)")
    versus_plain = rows["partitioned"]["claim p95 ms"] / rows["plain"]["claim p95 ms"]
    print(f"claim p95 partitioned / plain at {args.rows:,}: {versus_plain:.2f}")
    print(f"removing the oldest month: batched DELETE {delete_s:.2f} s, DROP {drop_s:.2f} s"
          f" ({delete_s / drop_s:.0f} x; target >= 20)")  # fmt: skip
    print(f"worst enqueue latency while 4 workers ran and rotation added/dropped: {stall:.3f} s")
    print(f"writer stalled {blocked:.2f} s behind a rotation waiting on an open claim"
          f" (lock wait {args.lock_wait} s; rotation gave up: {gave_up})")  # fmt: skip


if __name__ == "__main__":
    main()
