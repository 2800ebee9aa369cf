"""The queue's timing rules, and what its operations report."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import NamedTuple

from asynctaskmanager.domain import validation as check
from asynctaskmanager.domain.models import Task
from asynctaskmanager.errors import ValidationError

# The longest duration the settings take: a year keeps every sum with a TIMESTAMP in range.
LONGEST = timedelta(days=365)
MAX_MISSED_HEARTBEATS = 1000


@dataclass(frozen=True)
class QueueSettings:
    """Timing rules of the queue.

    A worker is dead after ``missed_heartbeats`` intervals of ``heartbeat_interval`` with
    no heartbeat. Retry delays are capped at ``max_retry_delay`` seconds and lose up to
    ``retry_jitter`` of their length at random. A running task is overdue ``timeout_grace``
    seconds after its own timeout.

    Each duration is at most :data:`LONGEST`, and ``max_retry_delay`` at most as many
    seconds: longer ones would take the queue's date arithmetic out of TIMESTAMP's range.
    """

    heartbeat_interval: timedelta = timedelta(seconds=10)
    missed_heartbeats: int = 3
    max_retry_delay: int = 3600
    retry_jitter: float = 0.1
    timeout_grace: timedelta = timedelta(0)

    def __post_init__(self) -> None:
        for name in ("heartbeat_interval", "timeout_grace"):
            value = getattr(self, name)
            if not isinstance(value, timedelta) or not timedelta(0) <= value <= LONGEST:
                raise ValidationError(
                    name, f"must be a timedelta from 0 to {LONGEST.days} days", value
                )
        if self.heartbeat_interval <= timedelta(0):
            raise ValidationError("heartbeat_interval", "must be positive", self.heartbeat_interval)
        check.integer("missed_heartbeats", self.missed_heartbeats, 1, MAX_MISSED_HEARTBEATS)
        if self.dead_after > LONGEST:
            raise ValidationError(
                "missed_heartbeats",
                f"times heartbeat_interval must be at most {LONGEST.days} days",
                self.missed_heartbeats,
            )
        check.integer("max_retry_delay", self.max_retry_delay, 0, int(LONGEST.total_seconds()))
        if isinstance(self.retry_jitter, bool) or not isinstance(self.retry_jitter, (int, float)):
            raise ValidationError(
                "retry_jitter", "must be a number between 0 and 1", self.retry_jitter
            )
        if not 0 <= self.retry_jitter <= 1:
            raise ValidationError("retry_jitter", "must be between 0 and 1", self.retry_jitter)

    @property
    def dead_after(self) -> timedelta:
        return self.heartbeat_interval * self.missed_heartbeats


class CompletionAndClaim(NamedTuple):
    """What :meth:`TaskQueue.complete_and_claim` did: whether the completion applied, and
    the tasks claimed."""

    completed: bool
    claimed: list[Task]


class CompletionsAndClaim(NamedTuple):
    """What :meth:`TaskQueue.complete_many_and_claim` did: per task, whether its completion
    applied, and the tasks claimed."""

    completed: list[bool]
    claimed: list[Task]


@dataclass(frozen=True)
class SweepReport:
    workers_marked_offline: list[str]
    requeued: list[str]
    failed: list[str]
