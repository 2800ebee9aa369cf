"""Values at and past the limits, shared by the unit and the backend tests of validation."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

from asynctaskmanager import Task, ValidationError

UTC = timezone.utc
NAIVE = datetime(2024, 1, 1, 12, 0, 0)
BEFORE_1970 = datetime(1969, 12, 31, 23, 59, 59, tzinfo=UTC)
EPOCH = datetime(1970, 1, 1, 0, 0, 0, tzinfo=UTC)  # TIMESTAMP starts one second later
AFTER_2038 = datetime(2038, 1, 19, 3, 14, 8, tzinfo=UTC)
# The same instant as 2038-01-19 03:14:08 UTC, written in +08:00.
AFTER_2038_PLUS8 = datetime(2038, 1, 19, 11, 14, 8, tzinfo=timezone(timedelta(hours=8)))
LONE_SURROGATE = "bad \ud800 text"


def nested(depth: int, leaf: Any = 1) -> Any:
    """``depth`` levels of arrays and objects, alternating, around ``leaf``."""
    value = leaf
    for level in range(depth):
        value = {"k": value} if level % 2 else [value]
    return value


def accepts_payload(document: object) -> bool:
    """Whether a task with ``document`` as its payload passes validation."""
    try:
        Task("e", payload=document)
    except ValidationError:
        return False
    return True
