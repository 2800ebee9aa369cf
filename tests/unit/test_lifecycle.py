"""The task state machine and the retry back-off: pure rules, no database."""

from __future__ import annotations

from decimal import Decimal

import pytest

from asynctaskmanager import (
    ALLOWED_TRANSITIONS,
    IllegalTransitionError,
    RetryPolicy,
    RetryStrategy,
    TaskStatus,
    can_transition,
)
from asynctaskmanager.domain.lifecycle import ensure_transition


def test_allowed_transitions_table() -> None:
    s = TaskStatus
    expected = {
        s.PENDING: {s.RUNNING, s.CANCELLED},
        s.RUNNING: {s.COMPLETED, s.FAILED, s.PENDING, s.CANCELLED},
        s.COMPLETED: set(),
        s.FAILED: set(),
        s.CANCELLED: set(),
    }
    assert expected == ALLOWED_TRANSITIONS
    for source in TaskStatus:
        for target in TaskStatus:
            allowed = target in ALLOWED_TRANSITIONS[source]
            assert can_transition(source, target) is allowed
            if allowed:
                ensure_transition("x", source, target)
            else:
                with pytest.raises(
                    IllegalTransitionError, match=f"{source.value} -> {target.value}"
                ):
                    ensure_transition("x", source, target)
    assert all(not ALLOWED_TRANSITIONS[status] for status in TaskStatus if status.is_final)


@pytest.mark.parametrize(
    ("strategy", "expected"),
    [
        (RetryStrategy.FIXED, [4, 4, 4, 4]),
        (RetryStrategy.LINEAR, [4, 8, 12, 16]),
        (RetryStrategy.EXPONENTIAL, [4, 12, 36, 50]),  # capped at 50
    ],
)
def test_retry_policy_delays(strategy: RetryStrategy, expected: list[int]) -> None:
    policy = RetryPolicy(strategy, 4, Decimal("3"), max_delay=50)
    assert [policy.delay_seconds(attempt) for attempt in (1, 2, 3, 4)] == expected
    jittered = RetryPolicy(strategy, 4, Decimal("3"), max_delay=50, jitter=0.5)
    for attempt, full in zip((1, 2, 3, 4), expected, strict=True):
        assert all(full / 2 <= jittered.delay_seconds(attempt) <= full for _ in range(50))
