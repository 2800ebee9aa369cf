"""What the runtime keeps about each running attempt, and what one run reports."""

from __future__ import annotations

from dataclasses import dataclass, field

from asynctaskmanager import Task


@dataclass
class RunSummary:
    """What one :func:`run_worker` did."""

    worker_id: str
    completed: int = 0
    failed: int = 0
    #: outcomes the store refused: the task had been taken back (timed out, or rescued)
    dropped: int = 0
    #: tasks still running at the shutdown deadline, handed back to the queue
    handed_back: list[str] = field(default_factory=list)
    #: a second signal (or ``stop(now=True)``): nothing was handed back or deregistered
    stopped_at_once: bool = False


@dataclass
class Attempt:
    """A task this worker is running: since when (monotonic), and what it said of it."""

    task: Task
    started: float
    overdue_reported: bool = False
    taken_back: bool = False
