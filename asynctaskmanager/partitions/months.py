"""Month arithmetic in UTC, and the ULID prefixes that mark month boundaries.

A library id is a ULID: its first 10 characters are the milliseconds since the epoch in
Crockford base32, so ids sort by their instant and the ids of one month lie between the
prefixes of its first instant and of the next month's. Everything here is pure: no clock is
read unless a caller passes ``now`` from one, and no session time zone is involved.
"""

from __future__ import annotations

import os
import re
from datetime import datetime, timedelta, timezone

from asynctaskmanager.errors import ValidationError

_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_VALUES = {char: value for value, char in enumerate(_ALPHABET)}
PREFIX_LENGTH = 10
_RANDOM_LENGTH = 16
# Every ULID of 2004-11-03 .. 2039-09-07 starts with "01" (2**40 .. 2**41 ms), which covers
# the whole TIMESTAMP range the library can store past 2004. Ids below "01" or from "02" up
# are not library ids of this era: they are kept apart from the months.
ERA_START = "01"
ERA_END = "02"
_MONTH_NAME = re.compile(r"^p(\d{4})(\d{2})$")


def _utc(instant: datetime, field: str) -> datetime:
    if not isinstance(instant, datetime) or instant.tzinfo is None:
        raise ValidationError(field, "must be a timezone-aware datetime", instant)
    return instant.astimezone(timezone.utc)


def month_start(instant: datetime) -> datetime:
    """The first instant (UTC) of the UTC month holding ``instant``."""
    utc = _utc(instant, "instant")
    return utc.replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def add_months(month: datetime, count: int) -> datetime:
    """The first instant of the month ``count`` months after ``month``'s (negative: before)."""
    start = month_start(month)
    index = start.year * 12 + (start.month - 1) + count
    return start.replace(year=index // 12, month=index % 12 + 1)


def month_range(first: datetime, last: datetime) -> list[datetime]:
    """The first instants of every month from ``first``'s to ``last``'s, both included."""
    months = []
    month = month_start(first)
    end = month_start(last)
    while month <= end:
        months.append(month)
        month = add_months(month, 1)
    return months


def ulid_prefix(instant: datetime) -> str:
    """The 10-character time prefix of the ULIDs made at ``instant`` (to the millisecond)."""
    utc = _utc(instant, "instant")
    millis = (utc - datetime(1970, 1, 1, tzinfo=timezone.utc)) // timedelta(milliseconds=1)
    if not 0 <= millis < 1 << 48:
        raise ValidationError("instant", "must lie in the ULID range (1970 to 10889)", instant)
    return "".join(_ALPHABET[(millis >> shift) & 31] for shift in range(45, -1, -5))


def ulid_instant(identifier: str) -> datetime | None:
    """The instant a ULID-shaped id encodes, or None when ``identifier`` is not one."""
    if len(identifier) != PREFIX_LENGTH + _RANDOM_LENGTH:
        return None
    millis = 0
    for char in identifier[:PREFIX_LENGTH]:
        value = _VALUES.get(char)
        if value is None:
            return None
        millis = millis * 32 + value
    if any(char not in _VALUES for char in identifier[PREFIX_LENGTH:]):
        return None
    return datetime(1970, 1, 1, tzinfo=timezone.utc) + timedelta(milliseconds=millis)


def id_at(instant: datetime) -> str:
    """A fresh ULID whose time is ``instant``: the id to give a task imported with its own
    historical ``created_at``, so that it lands in that month's partition."""
    randomness = int.from_bytes(os.urandom(10), "big")
    tail = "".join(_ALPHABET[(randomness >> shift) & 31] for shift in range(75, -1, -5))
    return ulid_prefix(instant) + tail


def partition_name(month: datetime) -> str:
    """``p202611`` for November 2026."""
    start = month_start(month)
    return f"p{start.year:04d}{start.month:02d}"


def month_of(name: str) -> datetime | None:
    """The month a ``pYYYYMM`` partition holds, or None for any other name."""
    match = _MONTH_NAME.match(name)
    if match is None:
        return None
    year, month = int(match.group(1)), int(match.group(2))
    if not 1 <= month <= 12:
        return None
    return datetime(year, month, 1, tzinfo=timezone.utc)
