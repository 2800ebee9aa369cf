"""``python -m bench.cost [--before TREE]``: what an operation costs, in measures load hardly moves.

Throughput on a shared two-core machine swings by half between runs; two figures do not:
the CPU time of our process per operation (``time.process_time``, memory backend, so no
waiting on a server), and the statements sent to MariaDB per operation (the server's
``Questions`` counter: each is a round trip). With ``--before TREE`` (a checkout without the
change, e.g. ``git worktree add /tmp/before <commit>``) both trees are measured three times,
alternately, and the best of each is shown side by side.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent.parent
OPERATIONS = ("enqueue", "bulk enqueue (per task)", "get by id", "claim+complete", "claim 10")


def _cpu_per_op(op: Callable[[int], Any], n: int) -> float:
    start = time.process_time()
    for i in range(n):
        op(i)
    return (time.process_time() - start) / n * 1e6


def _questions(site: Any) -> int:
    import MySQLdb

    url = site.mysql_server
    connection = MySQLdb.connect(host=url.host, port=url.port or 3306, user=url.username)
    try:
        cursor = connection.cursor()
        cursor.execute("SHOW GLOBAL STATUS LIKE 'Questions'")
        return int(cursor.fetchone()[1])
    finally:
        connection.close()


def _operations(ours: Any, known: list[str]) -> dict[str, Callable[[int], Any]]:
    def claim_complete(_i: int) -> None:
        for task in ours.claim("w1", 1):
            ours.complete(task)

    return {
        "enqueue": ours.enqueue,
        "get by id": lambda i: ours.get(known[i % len(known)]),
        "claim+complete": claim_complete,
        "claim 10": lambda _i: ours.claim("w1", 10),
    }


def measure() -> dict[str, dict[str, float]]:
    from bench.common import Site, pending
    from bench.ops import Ours

    found: dict[str, dict[str, float]] = {"cpu_us": {}, "statements": {}}
    with Site() as site:
        for backend in ("memory", "mariadb"):
            if backend == "mariadb" and not site.mysql_available:
                continue
            ours = Ours(site.fresh(backend, "ours"))
            ours.load(pending(20_000))
            ours.register("w1")
            for name, op in _operations(ours, ours.ids(2000)).items():
                n = 20 if name == "claim 10" else 200
                op(0)  # warm the statement caches
                if backend == "memory":
                    found["cpu_us"][name] = _cpu_per_op(op, n)
                else:
                    before = _questions(site)
                    for i in range(n):
                        op(i)
                    # The status query itself is one question.
                    found["statements"][name] = (_questions(site) - before - 1) / n
                ours.release_running()
            if backend == "memory":
                start = time.process_time()
                ours.enqueue_many(5000)
                per_task = (time.process_time() - start) / 5000 * 1e6
                found["cpu_us"]["bulk enqueue (per task)"] = per_task
            ours.close()
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.cost")
    parser.add_argument("--before", type=Path, help="a tree without the change")
    parser.add_argument("--json", action="store_true", help="print one measurement as JSON")
    args = parser.parse_args(argv)
    if args.json or args.before is None:
        print(json.dumps(measure()))
        return 0
    best: dict[str, dict[str, dict[str, float]]] = {"before": {}, "after": {}}
    for _ in range(3):
        for side, tree in (("before", args.before), ("after", HERE)):
            # Run from HERE's bench, importing the tree's library.
            out = subprocess.run(
                [sys.executable, str(HERE / "bench" / "cost.py"), "--json"],
                cwd=tree,
                env={**os.environ, "PYTHONPATH": f"{tree}:{HERE}"},
                check=True,
                capture_output=True,
                text=True,
            ).stdout
            for kind, values in json.loads(out).items():
                for name, value in values.items():
                    kept = best[side].setdefault(kind, {}).get(name)
                    best[side][kind][name] = value if kept is None else min(kept, value)
    print("| measure | operation | before | after | before/after |")
    print("|---|---|---:|---:|---:|")
    for kind, label in (("cpu_us", "CPU µs, memory"), ("statements", "statements, MariaDB")):
        for name in OPERATIONS:
            before = best["before"].get(kind, {}).get(name)
            after = best["after"].get(kind, {}).get(name)
            if before is None or after is None:
                continue
            print(f"| {label} | {name} | {before:,.1f} | {after:,.1f} | {before / after:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
