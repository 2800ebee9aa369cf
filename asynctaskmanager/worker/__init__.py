"""The worker runtime: run handlers for claimed tasks, with heartbeats, the sweep, and a
graceful shutdown.

    from asynctaskmanager.worker import run_worker
    run_worker(storage, {"email.send": send_email}, concurrency=8)

or ``python -m asynctaskmanager.worker --app myapp.tasks:handlers``.
"""

from asynctaskmanager.worker.app import load_handlers, main, run_from_app
from asynctaskmanager.worker.handlers import Handler
from asynctaskmanager.worker.records import RunSummary
from asynctaskmanager.worker.runtime import (
    WorkerRuntime,
    run_worker,
)
from asynctaskmanager.worker.waiting import IdleBackoff, Wakeup

__all__ = [
    "Handler",
    "IdleBackoff",
    "RunSummary",
    "Wakeup",
    "WorkerRuntime",
    "load_handlers",
    "main",
    "run_from_app",
    "run_worker",
]
