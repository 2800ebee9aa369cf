"""Which partition key: measured on MariaDB before choosing (see docs/partitioning.md).

Three copies of one task table of N rows spread over 24 months (ids are ULIDs made at each
row's created_at, as the library makes them):

- ``plain``: the library's schema, unpartitioned;
- ``a``: PRIMARY KEY (task_id, created_at) + RANGE (UNIX_TIMESTAMP(created_at)), one
  partition per month, boundaries computed in UTC;
- ``b``: PRIMARY KEY (task_id) + RANGE COLUMNS(task_id), one partition per month bounded by
  the ULID prefix of the month's first instant, plus ``p_low`` (< '01'), ``p_future`` (<
  '02', the catch-all for later ULIDs) and ``p_named`` (everything else: user-chosen ids).

For each: is a duplicate id in another month refused, how many partitions a get-by-id
touches (EXPLAIN PARTITIONS), whether the claim query is index-served without a filesort,
get-by-id and claim p95 through the public API, where user ids land, and the conversion time
of the ALTER. Run: ``python -m bench.partition_keys [--rows N] [--keep]``.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta, timezone
from typing import Any

from sqlalchemy import Connection, text
from sqlalchemy.dialects import mysql

from asynctaskmanager import Storage, Task, TaskStatus, open_storage
from asynctaskmanager.errors import DuplicateError
from asynctaskmanager.partitions.months import (
    ERA_END,
    ERA_START,
    add_months,
    id_at,
    month_range,
    partition_name,
    ulid_prefix,
)
from asynctaskmanager.queue.claim import claim_statement
from bench.common import (
    TASK_COLUMNS,
    TASK_TYPE,
    Site,
    driver_connection,
    percentile,
    register_ours,
    seed_ours,
)

MONTHS = 24
FINAL = ("completed", "completed", "completed", "completed", "failed", "cancelled")


def month_bounds(now: datetime, months: int) -> list[datetime]:
    """The first instants of the ``months`` months up to now's, then of 3 months ahead."""
    first = add_months(now, -(months - 1))
    return month_range(first, add_months(now, 3))


def ddl_a(months: Sequence[datetime]) -> str:
    parts = [
        f"PARTITION {partition_name(m)} VALUES LESS THAN ({int(add_months(m, 1).timestamp())})"
        for m in months
    ]
    parts.append("PARTITION pmax VALUES LESS THAN MAXVALUE")
    return (
        "ALTER TABLE task DROP PRIMARY KEY, ADD PRIMARY KEY (task_id, created_at) "
        f"PARTITION BY RANGE (UNIX_TIMESTAMP(created_at)) ({', '.join(parts)})"
    )


def ddl_b(months: Sequence[datetime]) -> str:
    parts = [f"PARTITION p_low VALUES LESS THAN ('{ERA_START}')"]
    parts += [
        f"PARTITION {partition_name(m)} VALUES LESS THAN ('{ulid_prefix(add_months(m, 1))}')"
        for m in months
    ]
    parts.append(f"PARTITION p_future VALUES LESS THAN ('{ERA_END}')")
    parts.append("PARTITION p_named VALUES LESS THAN (MAXVALUE)")
    return f"ALTER TABLE task PARTITION BY RANGE COLUMNS(task_id) ({', '.join(parts)})"


def load(storage: Storage, rows: int, now: datetime) -> tuple[float, list[str]]:
    """N rows over 24 months; 5% of the last two months' rows pending, the rest final."""
    rng = random.Random(7)
    span = timedelta(days=30.4 * MONTHS)
    recent = now - timedelta(days=61)
    sql = f"INSERT INTO task ({', '.join(TASK_COLUMNS)}) VALUES ({', '.join(['%s'] * 15)})"
    conn, proxy = driver_connection(storage)
    sample: list[str] = []
    start = time.perf_counter()
    try:
        cursor = conn.cursor()
        batch: list[tuple[Any, ...]] = []
        for i in range(rows):
            created = now - span * (i / rows) - timedelta(seconds=rng.random())
            created = created.replace(microsecond=0)
            status = "pending" if created > recent and i % 20 == 0 else FINAL[i % 6]
            task_id = id_at(created)
            if i % max(1, rows // 5000) == 0:
                sample.append(task_id)
            naive = created.replace(tzinfo=None)
            batch.append(
                (
                    task_id, TASK_TYPE, i % 4, status, json.dumps({"n": i}),
                    None, None, None if status == "pending" else "old-worker", 0, 3, 30,
                    naive, None, None if status == "pending" else naive,
                    None if status == "pending" else naive,
                )
            )  # fmt: skip
            if len(batch) == 5000:
                cursor.executemany(sql, batch)
                conn.commit()
                batch = []
        if batch:
            cursor.executemany(sql, batch)
            conn.commit()
        cursor.close()
    finally:
        proxy.close()
    return time.perf_counter() - start, sample


def _one(connection: Connection, sql: str, params: dict[str, Any] | None = None) -> Any:
    return connection.execute(text(sql), params or {}).mappings().first()


def duplicate_refused(storage: Storage, now: datetime) -> bool:
    """Create one id twice with created_at a year apart; True when the second is refused."""
    task_id = "dup-probe-" + id_at(now)[:12]
    old = add_months(now, -12) + timedelta(days=3)
    storage.tasks.create(
        Task(TASK_TYPE, task_id=task_id, created_at=now, status=TaskStatus.COMPLETED)
    )
    try:
        storage.tasks.create(
            Task(TASK_TYPE, task_id=task_id, created_at=old, status=TaskStatus.COMPLETED)
        )
        refused = False
    except DuplicateError:
        refused = True
    with storage.engine.begin() as connection:
        connection.execute(text("DELETE FROM task WHERE task_id = :i"), {"i": task_id})
    return refused


def partitions_of_get(storage: Storage, task_id: str) -> str:
    with storage.engine.connect() as connection:
        row = _one(
            connection, "EXPLAIN PARTITIONS SELECT * FROM task WHERE task_id = :i", {"i": task_id}
        )
    return str(row["partitions"]) if row else "?"


def home_partition(storage: Storage, task_id: str) -> str:
    """The partition that stores ``task_id``'s row (EXPLAIN with its own created_at too)."""
    with storage.engine.connect() as connection:
        created = connection.execute(
            text("SELECT created_at FROM task WHERE task_id = :i"), {"i": task_id}
        ).scalar_one()
        row = _one(
            connection,
            "EXPLAIN PARTITIONS SELECT * FROM task WHERE task_id = :i AND created_at = :c",
            {"i": task_id, "c": created},
        )
    return str(row["partitions"]) if row else "?"


def claim_plan(storage: Storage) -> str:
    compiled = claim_statement([TASK_TYPE], 1, skip_locked=True).compile(
        dialect=mysql.dialect(), compile_kwargs={"literal_binds": True}
    )
    with storage.engine.connect() as connection:
        rows = connection.execute(text(f"EXPLAIN {compiled}")).mappings().all()
    task_rows = [r for r in rows if r["table"] == "task"]
    row = task_rows[0] if task_rows else rows[0]
    return f"key={row['key']} extra={row['Extra']}"


def p95_ms(op: Callable[[int], Any], count: int) -> float:
    samples = []
    for i in range(count):
        start = time.perf_counter()
        op(i)
        samples.append(time.perf_counter() - start)
    return percentile(samples, 0.95) * 1000


def measure(storage: Storage, ids: list[str], now: datetime, count: int) -> dict[str, Any]:
    rng = random.Random(11)
    probe = [rng.choice(ids) for _ in range(count)]
    storage.tasks.get(probe[0])
    get_p95 = p95_ms(lambda i: storage.tasks.get(probe[i]), count)
    worker = f"w-{id_at(now)[-6:]}"
    register_ours(storage, worker)
    storage.queue.claim(worker, 1)
    claim_p95 = p95_ms(lambda i: storage.queue.claim(worker, 1), count // 2)
    user_id = "order-123"
    storage.tasks.create(Task(TASK_TYPE, task_id=user_id, status=TaskStatus.COMPLETED))
    imported = Task(TASK_TYPE, created_at=add_months(now, -18), status=TaskStatus.COMPLETED)
    storage.tasks.create(imported)
    edge = datetime(now.year - 1, 1, 31, 23, 59, 59, tzinfo=timezone.utc)
    edge_task = Task(TASK_TYPE, task_id=id_at(edge), created_at=edge, status=TaskStatus.COMPLETED)
    storage.tasks.create(edge_task)
    return {
        "duplicate id a year apart refused": duplicate_refused(storage, now),
        "get-by-id partitions (EXPLAIN)": partitions_of_get(storage, ids[len(ids) // 2]),
        "claim plan": claim_plan(storage),
        "get-by-id p95 ms": round(get_p95, 3),
        "claim p95 ms": round(claim_p95, 3),
        "user id 'order-123' lands in": home_partition(storage, user_id),
        "id made now, created_at 18 months ago, lands in": home_partition(
            storage, imported.task_id
        ),
        "31 Jan 23:59:59 UTC (id made then) lands in": home_partition(storage, edge_task.task_id),
    }


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--samples", type=int, default=2000)
    parser.add_argument("--keep", action="store_true")
    parser.add_argument("--mysql-url", default=None)
    args = parser.parse_args(argv)
    now = datetime.now(timezone.utc).replace(microsecond=0)
    months = month_bounds(now, MONTHS)
    results: dict[str, dict[str, Any]] = {}
    with Site(args.mysql_url, keep=args.keep) as site:
        plain_url = site.mysql_database("atm_pk_plain", fresh=True).url
        assert plain_url is not None
        plain = open_storage(plain_url)
        seed_ours(plain)
        seconds, ids = load(plain, args.rows, now)
        print(f"loaded {args.rows:,} rows in {seconds:.1f} s")
        with plain.engine.begin() as connection:
            connection.execute(text("ANALYZE TABLE task")).all()
        stores = {"plain": plain}
        for variant, ddl in (("a", ddl_a(months)), ("b", ddl_b(months))):
            url = site.mysql_database(f"atm_pk_{variant}", fresh=True).url
            assert url is not None
            storage = open_storage(url)
            with storage.engine.begin() as connection:
                connection.execute(
                    text("INSERT INTO task_config SELECT * FROM atm_pk_plain.task_config")
                )
                connection.execute(text("INSERT INTO task SELECT * FROM atm_pk_plain.task"))
            start = time.perf_counter()
            with storage.engine.begin() as connection:
                connection.execute(text(ddl))
            convert = time.perf_counter() - start
            with storage.engine.begin() as connection:
                connection.execute(text("ANALYZE TABLE task")).all()
            print(f"{variant}: ALTER (conversion of {args.rows:,} rows) {convert:.1f} s")
            results.setdefault(variant, {})["conversion s"] = round(convert, 1)
            stores[variant] = storage
        for variant, storage in stores.items():
            results.setdefault(variant, {}).update(measure(storage, ids, now, args.samples))
            storage.close()
    keys = list(dict.fromkeys(k for r in results.values() for k in r))
    print("| measurement | " + " | ".join(results) + " |")
    print("|---|" + "---|" * len(results))
    for key in keys:
        print(f"| {key} | " + " | ".join(str(r.get(key, "")) for r in results.values()) + " |")


if __name__ == "__main__":
    main()
