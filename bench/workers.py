"""Claim-and-complete loops in worker processes, each with its own storage or connection.

The parent fills the queue, starts N processes (spawn: nothing is inherited), waits until
each has opened its connection and registered its worker, then releases them together.
Each drains the queue one task at a time until a claim comes back empty. The rate is all
tasks finished over the time from the release to the last worker's end.
"""

from __future__ import annotations

import multiprocessing as mp
import time
from typing import Any

from bench.common import RESULT, Locator


def _open(kind: str, locator: Locator) -> Any:
    if kind in ("ours", "ours-next"):
        from bench.ops import Ours

        return Ours(locator, seed=False)
    if kind == "raw":
        from bench.ops import RawDriver

        return RawDriver(locator, seed=False)
    from bench.peer import Kombu

    return Kombu(locator)


def drain(impl: Any, kind: str, worker_id: str, batch: int = 1) -> int:
    """Claim ``batch`` tasks and complete each (or get and ack one) until the queue is empty.

    ``ours-next``: each completion claims the next task in the same transaction
    (``queue.complete_and_claim``).
    """
    done = 0
    if kind == "kombu":
        while impl.get_ack():
            done += 1
        return done
    if kind == "ours-next":
        tasks = impl.claim(worker_id, 1)
        while tasks:
            _completed, tasks = impl.queue.complete_and_claim(tasks[0], RESULT)
            done += 1
        return done
    while True:
        tasks = impl.claim(worker_id, batch)
        if not tasks:
            return done
        for task in tasks:
            impl.complete(task)
            done += 1


def _child(
    kind: str, locator: Locator, worker_id: str, batch: int, ready: Any, go: Any, out: Any
) -> None:
    try:
        impl = _open(kind, locator)
        if kind != "kombu":
            impl.register(worker_id, max(10, batch))
        ready.put(worker_id)
        go.wait()
        done = drain(impl, kind, worker_id, batch)
        out.put((worker_id, done, time.monotonic(), None))
        impl.close()
    except BaseException as error:
        ready.put(worker_id)
        out.put((worker_id, 0, time.monotonic(), repr(error)))


def run_processes(kind: str, locator: Locator, processes: int, batch: int = 1) -> tuple[int, float]:
    """Drain the queue at ``locator`` with ``processes`` workers; return (done, seconds)."""
    ctx = mp.get_context("spawn")
    ready, out = ctx.Queue(), ctx.Queue()
    go = ctx.Event()
    procs = [
        ctx.Process(
            target=_child,
            args=(kind, locator, f"{kind}-w{i}", batch, ready, go, out),
            daemon=True,
        )
        for i in range(processes)
    ]
    for proc in procs:
        proc.start()
    for _ in procs:
        ready.get(timeout=120)
    start = time.monotonic()
    go.set()
    results = [out.get(timeout=600) for _ in procs]
    for proc in procs:
        proc.join(timeout=30)
    errors = [error for _, _, _, error in results if error]
    if errors:
        raise RuntimeError(f"{kind} worker failed: {errors[0]}")
    done = sum(n for _, n, _, _ in results)
    end = max(stamp for _, _, stamp, _ in results)
    return done, end - start
