"""``python -m bench.prune [N]``: how fast ``queue.prune`` deletes finished tasks.

Loads N tasks (default 300,000: 90% completed, created over the last 30 days, the rest
pending) into an SQLite file and into MariaDB, then prunes those that ended more than
15 days ago, in batches of 1,000, and prints the rate.
"""

from __future__ import annotations

import sys
import time
from datetime import timedelta

from bench.common import Site
from bench.ops import Ours


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    n = int(args[0]) if args else 300_000
    statuses = [("completed", False)] * (n * 9 // 10) + [("pending", False)] * (n - n * 9 // 10)
    with Site() as site:
        for backend in ("sqlite", "mariadb"):
            if backend == "mariadb" and not site.mysql_available:
                continue
            ours = Ours(site.fresh(backend, "ours"))
            ours.load(statuses)
            start = time.perf_counter()
            report = ours.storage.queue.prune(timedelta(days=15))
            seconds = time.perf_counter() - start
            print(
                f"{backend}: pruned {report.tasks:,} of {n:,} tasks in {seconds:.1f} s"
                f" ({report.tasks / seconds:,.0f} tasks/s)"
            )
            ours.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
