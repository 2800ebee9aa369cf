"""The task queue on top of the store: enqueue, claim, guarded transitions, sweep, retention.

:class:`TaskQueue` (``service.py``) is the public API. The claim's SQL and its lock-order
doctrine are in ``claim.py``, the guarded ends of an attempt in ``attempts.py``, retention
in ``retention.py``, waiting for work (LISTEN/NOTIFY or polling) in ``wakeup.py``.
"""

from asynctaskmanager.queue.retention import PruneReport
from asynctaskmanager.queue.service import TaskQueue
from asynctaskmanager.queue.settings import (
    CompletionAndClaim,
    CompletionsAndClaim,
    QueueSettings,
    SweepReport,
)
from asynctaskmanager.queue.wakeup import WorkWaiter

__all__ = [
    "CompletionAndClaim",
    "CompletionsAndClaim",
    "PruneReport",
    "QueueSettings",
    "SweepReport",
    "TaskQueue",
    "WorkWaiter",
]
