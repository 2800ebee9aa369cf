"""Does a partition-pruning bound make the claim cheaper on a partitioned task table?

Issue 11, phase 2, item 4. N tasks over 24 months (``bench.partition_keys.load``: 5 % of
the last two months pending, the rest final), partitioned by ``partitions.enable``. The
claim's SELECT (``claim_statement``, FOR UPDATE SKIP LOCKED, LIMIT 1, in a transaction
rolled back each time) runs as it is and with ``task_id >= :low OR task_id < '01'``, ``low``
being the first id of the oldest month that holds an unfinished task (the ``p_low`` ids
stay claimable; ``p_named``'s are above ``low``). The two alternate, sample by sample, so
that they share the machine's noise. Also timed: learning ``low`` (one query).

Not part of CI. ``python -m bench.partition_claim [--rows N] [--samples N] [--keep]``.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import Connection, Select, create_engine, or_, text
from sqlalchemy.pool import NullPool

from asynctaskmanager import Storage, open_storage
from asynctaskmanager.infrastructure.engine import resolve_url
from asynctaskmanager.infrastructure.schema import task_table as t
from asynctaskmanager.partitions import enable
from asynctaskmanager.partitions.months import ERA_START, month_start, ulid_instant, ulid_prefix
from asynctaskmanager.queue.claim import claim_statement
from bench.common import TASK_TYPE, percentile, seed_ours
from bench.partition_keys import load

DATABASE = "atm_bench_part_claim"
OLDEST_UNFINISHED = text(
    "SELECT MIN(task_id) FROM task WHERE status IN ('pending', 'running')"
    " AND task_id >= :era_start AND task_id < '02'"
)


def oldest_unfinished_month(connection: Connection) -> str:
    """The first id of the oldest month holding an unfinished library-made task."""
    oldest = connection.execute(OLDEST_UNFINISHED, {"era_start": ERA_START}).scalar_one()
    instant = ulid_instant(oldest) if oldest else None
    return ulid_prefix(month_start(instant)) if instant else ERA_START


def bounded(statement: Select[Any], low: str) -> Select[Any]:
    return statement.where(or_(t.c.task_id >= low, t.c.task_id < ERA_START))


def time_claim(storage: Storage, statement: Select[Any]) -> float:
    with storage.engine.connect() as connection:
        start = time.perf_counter()
        with connection.begin() as transaction:
            rows = connection.execute(statement).all()
            transaction.rollback()
        elapsed = time.perf_counter() - start
    assert len(rows) == 1
    return elapsed


def explain(storage: Storage, statement: Select[Any]) -> list[dict[str, Any]]:
    sql = statement.compile(storage.engine, compile_kwargs={"literal_binds": True})
    with storage.engine.connect() as connection:
        rows = connection.execute(text(f"EXPLAIN PARTITIONS {sql}")).mappings().all()
    return [dict(row) for row in rows]


def measure(storage: Storage, samples: int) -> tuple[dict[str, list[float]], float, str]:
    with storage.engine.connect() as connection:
        start = time.perf_counter()
        low = oldest_unfinished_month(connection)
        learn_ms = (time.perf_counter() - start) * 1000
    plain = claim_statement([TASK_TYPE], 1, skip_locked=True)
    pruned = bounded(plain, low)
    for name, statement in (("as is", plain), ("bounded", pruned)):
        [plan] = explain(storage, statement)
        parts = str(plan["partitions"]).split(",")
        print(f"{name}: key {plan['key']}, {len(parts)} partitions, extra: {plan['Extra']}")
    timings: dict[str, list[float]] = {"as is": [], "bounded": []}
    for _ in range(20):  # warm both
        time_claim(storage, plain)
        time_claim(storage, pruned)
    for _ in range(samples):
        timings["as is"].append(time_claim(storage, plain))
        timings["bounded"].append(time_claim(storage, pruned))
    return timings, learn_ms, low


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--samples", type=int, default=2000)
    parser.add_argument("--keep", action="store_true")
    parser.add_argument("--mysql-url", default="mysql://root@127.0.0.1/")
    args = parser.parse_args(argv)
    now = datetime.now(timezone.utc).replace(microsecond=0)
    server = resolve_url(args.mysql_url)
    admin = create_engine(server, poolclass=NullPool)
    with admin.begin() as connection:
        connection.execute(text(f"CREATE DATABASE IF NOT EXISTS {DATABASE} CHARACTER SET utf8mb4"))
    try:
        storage = open_storage(server.set(database=DATABASE), upgrade=True)
        with storage.engine.connect() as connection:
            count = connection.execute(text("SELECT COUNT(*) FROM task")).scalar_one()
        if count != args.rows:
            with storage.engine.begin() as connection:
                for table in ("task_log", "task", "worker", "task_config"):
                    connection.execute(text(f"DELETE FROM {table}"))
            seed_ours(storage)
            seconds, _ids = load(storage, args.rows, now)
            print(f"loaded {args.rows:,} rows in {seconds:.0f} s")
            enable(storage)
            with storage.engine.begin() as connection:
                connection.execute(text("ANALYZE TABLE task")).all()
        timings, learn_ms, low = measure(storage, args.samples)
        storage.close()
    finally:
        if not args.keep:
            with admin.begin() as connection:
                connection.execute(text(f"DROP DATABASE IF EXISTS {DATABASE}"))
        admin.dispose()
    print(f"learning low ({low}): {learn_ms:.1f} ms")
    print(f"| {args.rows:,} tasks, claim SELECT | p50 ms | p95 ms |")
    print("|---|---|---|")
    for name, samples in timings.items():
        p50, p95 = (percentile(samples, q) * 1000 for q in (0.5, 0.95))
        print(f"| {name} | {p50:.2f} | {p95:.2f} |")
    ratio = percentile(timings["bounded"], 0.95) / percentile(timings["as is"], 0.95)
    print(f"bounded / as is, p95: {ratio:.2f}")


if __name__ == "__main__":
    main()
