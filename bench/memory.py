"""Peak memory of one bulk enqueue, measured in a fresh process.

``python -m bench.memory ours|raw tracemalloc|rss LOCATOR_JSON N`` opens the store, then
enqueues N tasks in one call, building the requests too (a caller has to), and prints a JSON
line: the tracemalloc peak above the baseline (Python allocations only), or the growth of the
resident set's high-water mark (everything: Python, SQLite's page cache, the driver). Two
processes, because tracemalloc's own bookkeeping would inflate the resident set.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import time
import tracemalloc
from dataclasses import asdict
from typing import Any

from bench.common import Locator


def _status_mb(field: str) -> float | None:
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    return None


def _reset_peak() -> float:
    """Reset the resident set's high-water mark to the current size; returns that size.

    ru_maxrss cannot be used alone: Linux carries it across exec, so a child started from a
    large parent inherits the parent's peak. Writing 5 to clear_refs resets VmHWM (Linux 4.0+).
    """
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as clear:
            clear.write("5")
    except OSError:
        pass
    current = _status_mb("VmRSS")
    return current if current is not None else _maxrss_mb()


def _peak_mb() -> float:
    peak = _status_mb("VmHWM")
    return peak if peak is not None else _maxrss_mb()


def _maxrss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def child(impl: str, mode: str, locator: Locator, n: int) -> dict[str, Any]:
    from asynctaskmanager import TaskRequest
    from bench.common import TASK_TYPE, payload
    from bench.ops import Ours, RawDriver

    store: Any = Ours(locator) if impl == "ours" else RawDriver(locator)
    if impl == "ours":  # warm up: statement cache, lazy imports
        store.queue.enqueue_many([TaskRequest(TASK_TYPE, payload(-1))])
    else:
        store.enqueue_many(1, -1)
    if mode == "tracemalloc":
        tracemalloc.start()
        base = tracemalloc.get_traced_memory()[0]
    rss_before = _reset_peak()
    start = time.perf_counter()
    if impl == "ours":
        requests = [TaskRequest(TASK_TYPE, payload(i)) for i in range(n)]
        done = len(store.queue.enqueue_many(requests))
        del requests
    else:
        done = store.enqueue_many(n)
    seconds = time.perf_counter() - start
    result: dict[str, Any] = {"impl": impl, "mode": mode, "tasks": done, "seconds": seconds}
    if mode == "tracemalloc":
        result["peak_mb"] = (tracemalloc.get_traced_memory()[1] - base) / 2**20
        tracemalloc.stop()
    else:
        result["peak_mb"] = _peak_mb() - rss_before
        result["rss_before_mb"] = rss_before
    store.close()
    return result


def measure(impl: str, mode: str, locator: Locator, n: int) -> dict[str, Any]:
    """Run :func:`child` in a fresh interpreter and return its report."""
    out = subprocess.run(
        [sys.executable, "-m", "bench.memory", impl, mode, json.dumps(asdict(locator)), str(n)],
        check=True,
        capture_output=True,
        text=True,
        timeout=900,
    )
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


if __name__ == "__main__":
    _impl, _mode, _locator, _n = sys.argv[1:5]
    print(json.dumps(child(_impl, _mode, Locator(**json.loads(_locator)), int(_n))))
