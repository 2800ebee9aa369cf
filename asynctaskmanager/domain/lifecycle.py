"""The task state machine and the retry back-off: pure rules, no storage.

::

    pending ──claim──▶ running ──complete──▶ completed
       │                 │ ├──fail (no retry left)──▶ failed
       │                 │ └──fail / rescue (retry left)──▶ pending (scheduled_at = back-off)
       └──cancel──▶ cancelled ◀──cancel── running

completed, failed and cancelled are final.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from decimal import Decimal

from asynctaskmanager.domain.enums import RetryStrategy, TaskStatus
from asynctaskmanager.errors import IllegalTransitionError, ValidationError

ALLOWED_TRANSITIONS: dict[TaskStatus, frozenset[TaskStatus]] = {
    TaskStatus.PENDING: frozenset({TaskStatus.RUNNING, TaskStatus.CANCELLED}),
    TaskStatus.RUNNING: frozenset(
        {TaskStatus.COMPLETED, TaskStatus.FAILED, TaskStatus.PENDING, TaskStatus.CANCELLED}
    ),
    TaskStatus.COMPLETED: frozenset(),
    TaskStatus.FAILED: frozenset(),
    TaskStatus.CANCELLED: frozenset(),
}


def can_transition(from_status: TaskStatus, to_status: TaskStatus) -> bool:
    return to_status in ALLOWED_TRANSITIONS[from_status]


def ensure_transition(task_id: str, from_status: TaskStatus, to_status: TaskStatus) -> None:
    if not can_transition(from_status, to_status):
        raise IllegalTransitionError(task_id, from_status.value, to_status.value)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How long a failed attempt waits before it runs again.

    ``attempt`` counts from 1 (the first retry). The delay is capped at ``max_delay`` seconds.
    ``jitter`` in [0, 1] takes off up to that fraction at random, so that tasks that failed
    together do not all come back in the same second.
    """

    strategy: RetryStrategy
    base_delay: int
    backoff_rate: Decimal
    max_delay: int = 3600
    jitter: float = 0.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.jitter <= 1.0:
            raise ValidationError("jitter", "must be between 0 and 1", self.jitter)
        if self.max_delay < 0:
            raise ValidationError("max_delay", "must be at least 0", self.max_delay)

    def delay_seconds(self, attempt: int, rng: random.Random | None = None) -> int:
        if attempt < 1:
            raise ValidationError("attempt", "must be at least 1", attempt)
        if self.strategy is RetryStrategy.FIXED:
            delay = float(self.base_delay)
        elif self.strategy is RetryStrategy.LINEAR:
            delay = float(self.base_delay) * attempt
        else:
            exponent = attempt - 1
            rate = float(self.backoff_rate)
            # Past the cap the exact power does not matter; avoid overflowing the float.
            if rate > 1 and exponent * math.log(rate) > math.log(self.max_delay + 1) + 1:
                delay = float(self.max_delay)
            else:
                delay = self.base_delay * rate**exponent
        delay = min(delay, float(self.max_delay))
        if self.jitter:
            delay *= 1.0 - self.jitter * (rng or random).random()
        return math.ceil(delay)
