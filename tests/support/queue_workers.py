"""Worker loops for the concurrency tests, importable by spawned processes.

A worker registers, waits for the start signal, then claims and completes tasks until none
is pending. It asks for more tasks than it has room for, so that capacity is tested under
contention, and records everything the tests check afterwards instead of raising: the ids
it claimed, every error that reached it, refused completions and capacity breaches.
"""

from __future__ import annotations

import multiprocessing.synchronize
import os
import signal
import time
import traceback
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Protocol

from asynctaskmanager import (
    QueueSettings,
    Storage,
    Task,
    TaskFilter,
    TaskQueue,
    TaskStatus,
    Worker,
    open_storage,
)

SHORT_HEARTBEATS = QueueSettings(
    heartbeat_interval=timedelta(seconds=1), missed_heartbeats=2, retry_jitter=0.0
)


class StartSignal(Protocol):
    def wait(self, timeout: float | None = None) -> bool: ...


@dataclass
class WorkerReport:
    worker_id: str
    pid: int = field(default_factory=os.getpid)
    claimed: list[str] = field(default_factory=list)
    completed: int = 0
    refused: int = 0
    claims: int = 0
    empty_claims: int = 0
    max_held: int = 0
    over_capacity: int = 0
    errors: list[str] = field(default_factory=list)
    retries: int = 0  # deadlocks and lock waits retried inside Storage.run (processes only)
    seconds: float = 0.0


def work_loop(
    storage: Storage,
    worker_id: str,
    *,
    capacity: int,
    start: StartSignal | None = None,
    deadline: float = 300.0,
    queue: TaskQueue | None = None,
) -> WorkerReport:
    """Claim and complete until nothing is pending; never raises."""
    queue = queue or storage.queue
    report = WorkerReport(worker_id)
    try:
        queue.register_worker(Worker(worker_id, worker_id, f"pid-{os.getpid()}", capacity=capacity))
    except Exception:
        report.errors.append(traceback.format_exc())
        return report
    if start is not None:
        start.wait(60)
    began = time.monotonic()
    held: list[Task] = []
    while time.monotonic() - began < deadline:
        try:
            # Ask for a full capacity's worth while still holding some: the claim must cap it.
            tasks = queue.claim(worker_id, limit=capacity)
            report.claims += 1
            held.extend(tasks)
            report.claimed.extend(task.task_id for task in tasks)
            report.max_held = max(report.max_held, len(held))
            if len(held) > capacity:
                report.over_capacity += 1
            if not held:
                report.empty_claims += 1
                if storage.tasks.count(TaskFilter(status=TaskStatus.PENDING)) == 0:
                    break
                time.sleep(0.003)
                continue
            # Finish all but the newest, then claim again while still holding that one.
            for task in held[: max(1, len(held) - 1)]:
                if queue.complete(task, {"by": worker_id}):
                    report.completed += 1
                else:
                    report.refused += 1
                held.remove(task)
        except Exception:
            report.errors.append(traceback.format_exc())
            if len(report.errors) > 20:
                break
    for task in held:  # only after a deadline or a run of errors
        try:
            queue.complete(task, {"by": worker_id})
        except Exception:
            report.errors.append(traceback.format_exc())
    report.seconds = time.monotonic() - began
    return report


def process_worker(
    url: str,
    worker_id: str,
    capacity: int,
    start: multiprocessing.synchronize.Event,
    results: Any,
) -> None:
    """Entry point of a spawned worker process: its own storage, its own connections."""
    retries = 0
    try:
        with open_storage(url) as storage:
            pause = storage.retry.pause

            def counted_pause(attempt: int) -> None:
                nonlocal retries
                retries += 1
                pause(attempt)

            storage.retry.pause = counted_pause  # type: ignore[method-assign]
            report = work_loop(storage, worker_id, capacity=capacity, start=start)
            report.retries = retries
    except Exception:
        report = WorkerReport(worker_id, errors=[traceback.format_exc()])
    results.put(report)


def claim_and_hang(url: str, worker_id: str, how_many: int, results: Any) -> None:
    """Register, claim ``how_many`` tasks, hand the claimed Task objects to the parent, and
    hang on to them until killed."""
    with open_storage(url, queue_settings=SHORT_HEARTBEATS) as storage:
        storage.queue.register_worker(
            Worker(worker_id, worker_id, f"pid-{os.getpid()}", capacity=how_many)
        )
        tasks = storage.queue.claim(worker_id, limit=how_many)
        results.put(tasks)
        while True:  # "working" on them; never heartbeats again
            signal.pause()
