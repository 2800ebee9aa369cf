"""UTC month arithmetic and ULID month prefixes: pure, no database."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from asynctaskmanager import ValidationError, new_id
from asynctaskmanager.partitions.months import (
    add_months,
    id_at,
    month_of,
    month_range,
    month_start,
    partition_name,
    ulid_instant,
    ulid_prefix,
)

UTC = timezone.utc
PLUS_8 = timezone(timedelta(hours=8))


def test_month_start_is_the_utc_month_whatever_the_offset() -> None:
    # 1 Feb 07:59 at +08:00 is still 31 January in UTC.
    assert month_start(datetime(2026, 2, 1, 7, 59, tzinfo=PLUS_8)) == datetime(
        2026, 1, 1, tzinfo=UTC
    )
    assert month_start(datetime(2026, 2, 1, 8, 0, tzinfo=PLUS_8)) == datetime(
        2026, 2, 1, tzinfo=UTC
    )


def test_add_months_crosses_years_both_ways() -> None:
    assert add_months(datetime(2026, 11, 15, tzinfo=UTC), 3) == datetime(2027, 2, 1, tzinfo=UTC)
    assert add_months(datetime(2026, 1, 31, tzinfo=UTC), -1) == datetime(2025, 12, 1, tzinfo=UTC)
    assert add_months(datetime(2026, 1, 1, tzinfo=UTC), -13) == datetime(2024, 12, 1, tzinfo=UTC)


def test_month_range_includes_both_ends() -> None:
    months = month_range(datetime(2025, 11, 30, tzinfo=UTC), datetime(2026, 2, 1, tzinfo=UTC))
    assert [partition_name(m) for m in months] == ["p202511", "p202512", "p202601", "p202602"]


def test_prefix_matches_the_library_ids_and_orders_by_time() -> None:
    before = datetime.now(UTC) - timedelta(milliseconds=2)
    made = new_id()
    after = datetime.now(UTC) + timedelta(milliseconds=2)
    assert ulid_prefix(before) <= made[:10] <= ulid_prefix(after)
    instant = ulid_instant(made)
    assert instant is not None and before <= instant <= after


def test_last_instant_of_january_sorts_below_february_bound() -> None:
    last = datetime(2026, 1, 31, 23, 59, 59, 999000, tzinfo=UTC)
    february = ulid_prefix(datetime(2026, 2, 1, tzinfo=UTC))
    assert ulid_prefix(last) < february
    assert id_at(last) < february < id_at(datetime(2026, 2, 1, tzinfo=UTC))


def test_ulid_instant_refuses_other_ids() -> None:
    assert ulid_instant("order-123") is None
    assert ulid_instant("01" + "U" * 24) is None  # U is not Crockford base32
    moment = datetime(2026, 3, 4, 5, 6, 7, 8000, tzinfo=UTC)
    assert ulid_instant(id_at(moment)) == moment


def test_partition_names_round_trip() -> None:
    assert partition_name(datetime(2026, 2, 14, tzinfo=UTC)) == "p202602"
    assert month_of("p202602") == datetime(2026, 2, 1, tzinfo=UTC)
    assert month_of("p_future") is None
    assert month_of("p202613") is None


def test_naive_datetimes_are_refused() -> None:
    with pytest.raises(ValidationError):
        month_start(datetime(2026, 1, 1))
    with pytest.raises(ValidationError):
        ulid_prefix(datetime(2026, 1, 1))
