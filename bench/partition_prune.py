"""queue.prune on a partitioned task table against the same prune on one table.

N tasks over 24 months (``bench.partition_keys.load``: ids made at each row's created_at,
final but for 5 % of the last two months) in two databases: ``plain`` and ``partitioned``
(the same rows, converted by ``partitions.enable``). The oldest month is partial, so one
untimed prune first removes it from both; then the same ``queue.prune`` call removes the
next, a full month: by the batched DELETE on ``plain``, by DROP PARTITION on
``partitioned``. Before each timed prune the script waits for InnoDB's dirty pages to be
flushed (a DROP PARTITION just after a bulk load took 1.0-1.1 s here, waiting for them; a
month old enough to prune is cold).

Not part of CI. ``python -m bench.partition_prune [--rows N]``.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from datetime import datetime, timedelta, timezone

from sqlalchemy import URL, create_engine, text
from sqlalchemy.pool import NullPool

from asynctaskmanager import PruneReport, Storage, open_storage
from asynctaskmanager.infrastructure.engine import resolve_url
from asynctaskmanager.partitions import enable
from asynctaskmanager.partitions.months import add_months, month_start
from bench.common import seed_ours
from bench.partition_keys import load

PLAIN = "atm_bench_prune_plain"
PARTITIONED = "atm_bench_prune_part"


def settle(storage: Storage, limit: int = 1000, patience: float = 30.0) -> int:
    """Wait (at most ``patience`` s) until InnoDB has flushed the load's dirty pages down to
    ``limit``: the month a prune removes in production is cold, and a DROP PARTITION right
    after a bulk load waits for the tablespace's dirty pages. Returns the count left."""
    deadline = time.monotonic() + patience
    while True:
        with storage.engine.connect() as connection:
            row = connection.execute(
                text("SHOW GLOBAL STATUS LIKE 'Innodb_buffer_pool_pages_dirty'")
            ).one()
        dirty = int(row[1])
        if dirty <= limit or time.monotonic() > deadline:
            return dirty
        time.sleep(1)


def prune_to(storage: Storage, months_back: int, now: datetime) -> tuple[PruneReport, float]:
    """Prune everything that ended before the month ``months_back`` ago began (a few
    seconds into it: the database's clock is whole seconds, and the month must lie wholly
    before the cutoff to be dropped); timed."""
    cutoff = add_months(month_start(now), -months_back) + timedelta(seconds=5)
    age = datetime.now(timezone.utc) - cutoff
    start = time.perf_counter()
    report = storage.queue.prune(age, batch_size=1000)
    return report, time.perf_counter() - start


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--mysql-url", default="mysql://root@127.0.0.1/")
    args = parser.parse_args(argv)
    now = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(seconds=1)
    server: URL = resolve_url(args.mysql_url)
    admin = create_engine(server, poolclass=NullPool)
    with admin.begin() as connection:
        for name in (PLAIN, PARTITIONED):
            connection.execute(text(f"DROP DATABASE IF EXISTS {name}"))
            connection.execute(text(f"CREATE DATABASE {name} CHARACTER SET utf8mb4"))
    try:
        plain = open_storage(server.set(database=PLAIN), upgrade=True)
        part = open_storage(server.set(database=PARTITIONED), upgrade=True)
        seed_ours(plain)
        seconds, _ids = load(plain, args.rows, now)
        print(f"loaded {args.rows:,} rows in {seconds:.0f} s")
        with part.engine.begin() as connection:
            for table in ("task_config", "task"):
                connection.execute(text(f"INSERT INTO {table} SELECT * FROM {PLAIN}.{table}"))
        enable(part)
        for storage in (plain, part):
            with storage.engine.begin() as connection:
                connection.execute(text("ANALYZE TABLE task")).all()
        prune_to(plain, 23, now)  # the partial oldest month, untimed
        prune_to(part, 23, now)
        print(f"dirty pages before the timed prunes: {settle(plain)}")
        deleted, delete_s = prune_to(plain, 22, now)
        print(f"dirty pages before the partitioned prune: {settle(part)}")
        dropped, drop_s = prune_to(part, 22, now)
        plain.close()
        part.close()
    finally:
        with admin.begin() as connection:
            for name in (PLAIN, PARTITIONED):
                connection.execute(text(f"DROP DATABASE IF EXISTS {name}"))
        admin.dispose()
    print(f"plain:       queue.prune removed {deleted.tasks:,} tasks in {delete_s:.2f} s")
    print(
        f"partitioned: queue.prune removed {dropped.tasks:,} tasks in {drop_s:.2f} s"
        f" (dropped {', '.join(dropped.partitions) or 'nothing'})"
    )
    print(f"batched DELETE / partitioned prune: {delete_s / drop_s:.1f} x")


if __name__ == "__main__":
    main()
