"""The sweep a worker runs for its fleet under a lease, and the checks of the runtime's
options."""

from __future__ import annotations

import math
import threading
from datetime import timedelta

from asynctaskmanager import AsyncTaskManagerError, Storage, ValidationError
from asynctaskmanager.domain import validation as check
from asynctaskmanager.worker.logs import logger

SWEEP_LEASE = "asynctaskmanager.sweep"
CONCURRENCY_MAX = 1000


def sweep_while_leased(
    storage: Storage, worker_id: str, every: timedelta, stop: threading.Event
) -> None:
    """Every ``every``, run the store's sweep if this worker holds the sweep lease (taking
    it when it is free), until ``stop`` is set. One worker of a fleet sweeps at a time."""
    interval = every.total_seconds()
    # Held for a few intervals: renewed every interval by its holder, it passes to another
    # worker only once its holder has stopped renewing.
    ttl = timedelta(seconds=max(2, math.ceil(interval * 3)))
    while not stop.wait(interval):
        try:
            if not storage.leases.acquire(SWEEP_LEASE, worker_id, ttl):
                continue
            report = storage.queue.sweep()
        except AsyncTaskManagerError as error:
            logger.warning("worker %s: sweep failed: %s", worker_id, error)
            continue
        if report.workers_marked_offline or report.requeued or report.failed:
            logger.info(
                "sweep: workers offline %s, requeued %s, failed %s",
                report.workers_marked_offline,
                report.requeued,
                report.failed,
            )


def check_options(
    *,
    concurrency: object,
    burst: object,
    seconds: dict[str, object],
    intervals: dict[str, object],
    batch_size: object,
) -> None:
    """ValidationError naming the first bad option of :class:`WorkerRuntime`."""
    check.integer("concurrency", concurrency, 1, CONCURRENCY_MAX)
    check.boolean("burst", burst)
    for option, value in seconds.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            raise ValidationError(option, "must be a number of seconds of at least 0", value)
    for option, interval in intervals.items():
        if interval is not None and (
            not isinstance(interval, timedelta) or interval <= timedelta(0)
        ):
            raise ValidationError(option, "must be a positive timedelta or None", interval)
    check.integer("batch_size", batch_size, 1, 1000)
