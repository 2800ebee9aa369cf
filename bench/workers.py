"""Claim-and-complete loops in worker processes, each with its own storage or connection.

The parent fills the queue, starts N processes (spawn: nothing is inherited), waits until
each has opened its connection and registered its worker, then releases them together.
Each drains the queue until a claim comes back empty. The rate is all tasks finished over
the time from the release to the last worker's end.

Kinds: ``ours``, ``raw`` (claim ``batch``, complete each), ``ours-next`` (complete_and_claim
one at a time), ``ours-batch`` and ``raw-batch`` (claim 10, then complete the 10 and claim
the next 10 in one transaction until empty), ``ours-runtime`` (the worker runtime,
``run_worker`` in burst mode over no-op handlers: it registers its own worker once
released) and ``kombu`` (get+ack).

:func:`run_latency` measures enqueue-to-start latency: runtime workers (not in burst mode)
run while the parent enqueues at a steady rate; each handler notes ``time.time()`` less
the enqueue time carried in the payload (the database's clock has whole seconds only).
"""

from __future__ import annotations

import multiprocessing as mp
import time
from collections.abc import Callable
from typing import Any

from bench.common import RESULT, TASK_TYPE, Locator

BATCH = 10  # the batched loops' claim size
RUNTIME_CONCURRENCY = 8
ENQUEUED_AT = "enqueued_at"  # the payload key run_latency's producer stamps


def noop(task: Any) -> None:
    """The runtime's handler: no work, so that the store's cost is all that is measured."""


def _open(kind: str, locator: Locator) -> Any:
    if kind in ("ours", "ours-next", "ours-batch", "ours-runtime"):
        from bench.ops import Ours

        return Ours(locator, seed=False)
    if kind in ("raw", "raw-batch"):
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
    if kind in ("ours-batch", "raw-batch"):
        complete_and_claim = impl.queue.complete_many_and_claim if kind == "ours-batch" else None
        tasks = impl.claim(worker_id, BATCH)
        while tasks:
            if complete_and_claim is not None:
                applied, tasks = complete_and_claim([(t, RESULT) for t in tasks], limit=BATCH)
            else:
                applied, tasks = impl.complete_many_and_claim(tasks, BATCH)
            done += sum(applied)
        return done
    if kind == "ours-runtime":
        return _runtime(impl.storage, noop, worker_id, burst=True)
    while True:
        tasks = impl.claim(worker_id, batch)
        if not tasks:
            return done
        for task in tasks:
            impl.complete(task)
            done += 1


def _runtime(storage: Any, handler: Callable[[Any], None], worker_id: str, burst: bool) -> int:
    """``run_worker`` over the bench type; in burst mode until nothing is left, else until
    SIGTERM (its own signal handling); returns the tasks it completed."""
    from asynctaskmanager.worker import run_worker

    summary = run_worker(
        storage,
        {TASK_TYPE: handler},
        worker_id=worker_id,
        concurrency=RUNTIME_CONCURRENCY,
        burst=burst,
        handle_signals=not burst,
    )
    return summary.completed


def _child(
    kind: str, locator: Locator, batch: int, go: Any, worker_id: str, ready: Any, out: Any
) -> None:
    worker_id = f"{kind}-{worker_id}"
    try:
        impl = _open(kind, locator)
        if kind not in ("kombu", "ours-runtime"):
            impl.register(worker_id, max(BATCH, batch))
        ready.put(worker_id)
        go.wait()
        done = drain(impl, kind, worker_id, batch)
        out.put((worker_id, done, time.monotonic(), None))
        impl.close()
    except BaseException as error:
        ready.put(worker_id)
        out.put((worker_id, 0, time.monotonic(), repr(error)))


def _spawn(processes: int, target: Callable[..., None], *args: Any) -> tuple[list[Any], Any]:
    """Start ``processes`` children ``target(*args, worker_id, ready, out)`` (spawned:
    nothing inherited) and wait until each is ready; returns them and their out queue."""
    ctx = mp.get_context("spawn")
    ready, out = ctx.Queue(), ctx.Queue()
    procs = [
        ctx.Process(target=target, args=(*args, f"w{i}", ready, out), daemon=True)
        for i in range(processes)
    ]
    for proc in procs:
        proc.start()
    for _ in procs:
        ready.get(timeout=120)
    return procs, out


def _collect(procs: list[Any], out: Any, what: str) -> list[tuple[str, int, Any, str | None]]:
    """Each child's (worker_id, done, value, error); raises on the first error."""
    results = [out.get(timeout=600) for _ in procs]
    for proc in procs:
        proc.join(timeout=30)
    errors = [error for _, _, _, error in results if error]
    if errors:
        raise RuntimeError(f"{what} worker failed: {errors[0]}")
    return results


def run_processes(kind: str, locator: Locator, processes: int, batch: int = 1) -> tuple[int, float]:
    """Drain the queue at ``locator`` with ``processes`` workers; return (done, seconds)."""
    go = mp.get_context("spawn").Event()
    procs, out = _spawn(processes, _child, kind, locator, batch, go)
    start = time.monotonic()
    go.set()
    results = _collect(procs, out, kind)
    done = sum(n for _, n, _, _ in results)
    end = max(stamp for _, _, stamp, _ in results)
    return done, end - start


# --- enqueue-to-start latency under load ---------------------------------------------------


def _latency_child(locator: Locator, worker_id: str, ready: Any, out: Any) -> None:
    """A runtime worker until SIGTERM (its own graceful shutdown); sends back each task's
    enqueue-to-start latency in seconds."""
    worker_id = f"latency-{worker_id}"
    try:
        from bench.ops import Ours

        impl = Ours(locator, seed=False)
        latencies: list[float] = []

        def note_start(task: Any) -> None:
            latencies.append(time.time() - task.payload[ENQUEUED_AT])

        ready.put(worker_id)
        completed = _runtime(impl.storage, note_start, worker_id, burst=False)
        out.put((worker_id, completed, latencies, None))
        impl.close()
    except BaseException as error:
        ready.put(worker_id)
        out.put((worker_id, 0, [], repr(error)))


def run_latency(
    locator: Locator,
    processes: int,
    rate: float,
    seconds: float,
    enqueue: Callable[[dict[str, Any]], Any],
    unfinished: Callable[[], int],
) -> tuple[list[float], float]:
    """Start ``processes`` runtime workers on ``locator``; enqueue (with ``enqueue``, one
    task per call) at ``rate`` tasks a second for ``seconds``; wait until ``unfinished()``
    is 0; stop the workers with SIGTERM. Returns every task's latency and the rate achieved."""
    procs, out = _spawn(processes, _latency_child, locator)
    time.sleep(0.5)  # the workers register and start polling
    total = max(1, int(rate * seconds))
    start = time.monotonic()
    for i in range(total):
        wait = start + i / rate - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        enqueue({"n": i, ENQUEUED_AT: time.time()})
    achieved = total / (time.monotonic() - start)
    deadline = time.monotonic() + 120
    while unfinished() and time.monotonic() < deadline:
        time.sleep(0.05)
    for proc in procs:
        proc.terminate()  # SIGTERM: the runtime's graceful shutdown
    results = _collect(procs, out, "latency")
    latencies = [value for _, _, values, _ in results for value in values]
    if len(latencies) != total:
        raise RuntimeError(f"latency: {len(latencies)} of {total} tasks started")
    return latencies, achieved
