"""``python -m bench.profile OPERATION [BACKEND]``: where our store spends its time.

Runs one operation in a loop under pyinstrument (a sampling profiler, so SQLAlchemy's many
small calls are not inflated as under cProfile) and prints the call tree. OPERATION is one of
enqueue, bulk, get, claim (claim+complete, one at a time); BACKEND is memory (default),
sqlite or mariadb. ``--all`` shows library frames (SQLAlchemy, the drivers) too.
"""

from __future__ import annotations

import argparse
import sys

from bench.common import Site, pending


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.profile")
    parser.add_argument("operation", choices=["enqueue", "bulk", "get", "claim"])
    parser.add_argument("backend", nargs="?", default="memory")
    parser.add_argument("-n", type=int, default=500, help="loop length")
    parser.add_argument("--all", action="store_true", help="show library frames too")
    args = parser.parse_args(argv)
    try:
        from pyinstrument import Profiler
    except ImportError:
        print("pyinstrument is missing: pip install -e '.[bench]'", file=sys.stderr)
        return 2
    from bench.ops import Ours

    with Site() as site:
        ours = Ours(site.fresh(args.backend, "ours"))
        ours.load(pending(max(args.n, 1000) + 100))
        ours.register("w1")
        ids = ours.ids(args.n)
        for _ in range(20):  # warm up the statement caches
            for task in ours.claim("w1", 1):
                ours.complete(task)
        profiler = Profiler(interval=0.0005)
        profiler.start()
        if args.operation == "enqueue":
            for i in range(args.n):
                ours.enqueue(i)
        elif args.operation == "bulk":
            ours.enqueue_many(args.n * 20)
        elif args.operation == "get":
            for i in range(args.n):
                ours.get(ids[i % len(ids)])
        else:
            for _ in range(args.n):
                for task in ours.claim("w1", 1):
                    ours.complete(task)
        profiler.stop()
        ours.close()
    print(profiler.output_text(unicode=False, color=False, show_all=args.all))
    return 0


if __name__ == "__main__":
    sys.exit(main())
