"""MySQL/MariaDB: monthly RANGE COLUMNS partitions on the ULID primary key.

Each partitioned table (``task`` on ``task_id``, ``task_log`` on ``log_id``) has this layout::

    p_low     VALUES LESS THAN ('01')              ids below this era's ULIDs (user ids)
    pYYYYMM   VALUES LESS THAN (<ULID prefix of the next month's first instant>)
    ...
    p_future  VALUES LESS THAN ('02')              the catch-all for later ULIDs: kept empty
    p_named   VALUES LESS THAN (MAXVALUE)          user ids from '02' up ('order-123', ...)

The primary key stays the id alone, so an id stays unique in the table; a lookup by id prunes
to one partition; the bounds are strings, so no session time zone enters them. Every
statement here is plain text: partition DDL has no SQLAlchemy construct.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, text
from sqlalchemy.exc import DBAPIError

from asynctaskmanager.partitions.months import (
    ERA_END,
    ERA_START,
    add_months,
    partition_name,
    ulid_prefix,
)

LOW = "p_low"
FUTURE = "p_future"
NAMED = "p_named"
FINAL_STATUSES = ("completed", "failed", "cancelled")
UNFINISHED_STATUSES = ("pending", "running")
# ER_LOCK_WAIT_TIMEOUT: also what a metadata-lock wait past lock_wait_timeout raises.
LOCK_WAIT_TIMEOUT = 1205


@dataclass(frozen=True, slots=True)
class RawPartition:
    """One row of information_schema.PARTITIONS: ``bound`` is None for MAXVALUE."""

    name: str
    bound: str | None
    row_estimate: int


_LAYOUT = text(
    "SELECT PARTITION_NAME, PARTITION_METHOD, PARTITION_EXPRESSION, PARTITION_DESCRIPTION,"
    " TABLE_ROWS FROM information_schema.PARTITIONS"
    " WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = :table"
    " ORDER BY PARTITION_ORDINAL_POSITION"
)


def _unquote(description: str) -> str | None:
    if description.upper() == "MAXVALUE":
        return None
    # RANGE COLUMNS bounds come back as SQL literals: 'xyz'.
    return description[1:-1].replace("''", "'") if description.startswith("'") else description


class MySQLPartitioning:
    """The statements and catalogue reads of monthly partitions on MySQL and MariaDB."""

    name = "mysql"

    def set_lock_wait(self, connection: Connection, seconds: int) -> None:
        # Integer seconds only (MariaDB refuses a fraction with error 1232).
        connection.execute(text(f"SET SESSION lock_wait_timeout = {int(seconds)}"))

    def is_lock_wait_timeout(self, error: DBAPIError) -> bool:
        args: tuple[object, ...] = tuple(getattr(error.orig, "args", ()))
        return bool(args) and args[0] == LOCK_WAIT_TIMEOUT

    def layout(self, connection: Connection, table: str, key: str) -> list[RawPartition] | None:
        """The table's partitions in order; None when it is not partitioned on ``key``
        by RANGE COLUMNS (unpartitioned, or partitioned some other way)."""
        rows = connection.execute(_LAYOUT, {"table": table}).all()
        if not rows or rows[0].PARTITION_NAME is None:
            return None
        if rows[0].PARTITION_METHOD != "RANGE COLUMNS":
            return None
        if rows[0].PARTITION_EXPRESSION.strip("`") != key:
            return None
        return [
            RawPartition(row.PARTITION_NAME, _unquote(row.PARTITION_DESCRIPTION), row.TABLE_ROWS)
            for row in rows
        ]

    def is_partitioned(self, connection: Connection, table: str) -> bool:
        rows = connection.execute(_LAYOUT, {"table": table}).all()
        return bool(rows) and rows[0].PARTITION_NAME is not None

    @staticmethod
    def _month(month: datetime) -> str:
        bound = ulid_prefix(add_months(month, 1))
        return f"PARTITION {partition_name(month)} VALUES LESS THAN ('{bound}')"

    def enable(self, table: str, key: str, months: Sequence[datetime]) -> str:
        parts = [f"PARTITION {LOW} VALUES LESS THAN ('{ERA_START}')"]
        parts += [self._month(month) for month in months]
        parts += [
            f"PARTITION {FUTURE} VALUES LESS THAN ('{ERA_END}')",
            f"PARTITION {NAMED} VALUES LESS THAN (MAXVALUE)",
        ]
        return f"ALTER TABLE {table} PARTITION BY RANGE COLUMNS({key}) ({', '.join(parts)})"

    def disable(self, table: str) -> str:
        return f"ALTER TABLE {table} REMOVE PARTITIONING"

    def split(self, table: str, months: Sequence[datetime]) -> str:
        """Carve ``months`` out of the (empty) catch-all: an empty REORGANIZE copies nothing."""
        parts = [self._month(month) for month in months]
        parts.append(f"PARTITION {FUTURE} VALUES LESS THAN ('{ERA_END}')")
        return f"ALTER TABLE {table} REORGANIZE PARTITION {FUTURE} INTO ({', '.join(parts)})"

    def drop(self, table: str, names: Sequence[str]) -> str:
        return f"ALTER TABLE {table} DROP PARTITION {', '.join(names)}"

    def sample_ids(
        self, connection: Connection, table: str, key: str, partition: str, limit: int
    ) -> list[str]:
        """Up to ``limit`` ids of the partition: an exact emptiness test, not an estimate."""
        rows = connection.execute(
            text(f"SELECT {key} FROM {table} PARTITION ({partition}) LIMIT {int(limit)}")
        )
        return [row[0] for row in rows]

    def unfinished(
        self, connection: Connection, partition: str, limit: int
    ) -> tuple[int, list[str]]:
        """How many tasks of the partition are not final, and a few of their ids.

        Served by the status index inside the one partition named (PARTITION selection)."""
        marks = ", ".join(f"'{status}'" for status in UNFINISHED_STATUSES)
        where = f"FROM task PARTITION ({partition}) WHERE status IN ({marks})"
        count = connection.execute(text(f"SELECT COUNT(*) {where}")).scalar_one()
        ids = connection.execute(
            text(f"SELECT task_id {where} ORDER BY task_id LIMIT {int(limit)}")
        ).scalars()
        return int(count), list(ids)

    def created_since(
        self, connection: Connection, partition: str, since: datetime, limit: int
    ) -> tuple[int, list[str]]:
        """Tasks of the partition created at or after ``since``: those the retention keeps.

        Compared through the epoch, so that the session's time zone cannot shift it."""
        where = f"FROM task PARTITION ({partition}) WHERE created_at >= FROM_UNIXTIME(:since)"
        params = {"since": int(since.timestamp())}
        count = connection.execute(text(f"SELECT COUNT(*) {where}"), params).scalar_one()
        ids = connection.execute(
            text(f"SELECT task_id {where} ORDER BY task_id LIMIT {int(limit)}"), params
        ).scalars()
        return int(count), list(ids)
