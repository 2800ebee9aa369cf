"""QueueSettings: the queue's timing rules are checked when they are made. No database."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from asynctaskmanager import QueueSettings, ValidationError


@pytest.mark.parametrize(
    ("field", "options"),
    [
        ("heartbeat_interval", {"heartbeat_interval": timedelta(0)}),
        ("missed_heartbeats", {"missed_heartbeats": 0}),
        ("max_retry_delay", {"max_retry_delay": -1}),
        ("retry_jitter", {"retry_jitter": 1.5}),
        ("timeout_grace", {"timeout_grace": 5}),
    ],
)
def test_queue_settings_are_validated(field: str, options: dict[str, Any]) -> None:
    with pytest.raises(ValidationError) as caught:
        QueueSettings(**options)
    assert caught.value.field == field


A_YEAR = timedelta(days=365)
A_YEAR_OF_SECONDS = int(A_YEAR.total_seconds())


def test_the_longest_settings_are_accepted() -> None:
    longest = QueueSettings(
        heartbeat_interval=A_YEAR,
        missed_heartbeats=1,
        max_retry_delay=A_YEAR_OF_SECONDS,
        retry_jitter=1,
        timeout_grace=A_YEAR,
    )
    assert longest.dead_after == A_YEAR
    assert QueueSettings(
        heartbeat_interval=timedelta(days=1), missed_heartbeats=365
    ).dead_after == (A_YEAR)


@pytest.mark.parametrize(
    ("field", "options"),
    [
        ("heartbeat_interval", {"heartbeat_interval": A_YEAR + timedelta(seconds=1)}),
        ("heartbeat_interval", {"heartbeat_interval": timedelta(days=10_000)}),
        ("heartbeat_interval", {"heartbeat_interval": timedelta(seconds=-1)}),
        ("timeout_grace", {"timeout_grace": A_YEAR + timedelta(microseconds=1)}),
        ("timeout_grace", {"timeout_grace": timedelta(seconds=-1)}),
        ("max_retry_delay", {"max_retry_delay": A_YEAR_OF_SECONDS + 1}),
        ("max_retry_delay", {"max_retry_delay": 2**31 - 1}),
        ("max_retry_delay", {"max_retry_delay": 60.0}),
        ("missed_heartbeats", {"heartbeat_interval": timedelta(days=1), "missed_heartbeats": 366}),
        ("missed_heartbeats", {"heartbeat_interval": A_YEAR, "missed_heartbeats": 2}),
        ("missed_heartbeats", {"missed_heartbeats": 1001}),
        ("retry_jitter", {"retry_jitter": True}),
        ("retry_jitter", {"retry_jitter": -0.1}),
    ],
)
def test_settings_past_a_year_are_refused_naming_the_field(
    field: str, options: dict[str, Any]
) -> None:
    with pytest.raises(ValidationError) as caught:
        QueueSettings(**options)
    assert caught.value.field == field
    assert field in str(caught.value)
