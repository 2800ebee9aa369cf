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
