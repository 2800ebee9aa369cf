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

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, Engine, text
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

    @contextmanager
    def ddl_connection(self, engine: Engine, lock_wait_seconds: int) -> Iterator[Connection]:
        """A connection whose DDL waits at most ``lock_wait_seconds`` for a metadata lock.

        The server's default comes back before the connection returns to the pool, where
        the library's other statements would otherwise inherit the short wait."""
        with engine.connect() as connection:
            # Integer seconds only (MariaDB refuses a fraction with error 1232).
            connection.execute(text(f"SET SESSION lock_wait_timeout = {int(lock_wait_seconds)}"))
            try:
                yield connection
            finally:
                try:
                    connection.execute(text("SET SESSION lock_wait_timeout = DEFAULT"))
                except DBAPIError:
                    connection.invalidate()  # never pool a connection that kept the short wait

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

    def prune_check(
        self, connection: Connection, partition: str, cutoff: datetime, statuses: Sequence[str]
    ) -> tuple[int, int]:
        """The partition's task count, and how many of its tasks queue.prune would keep: not
        in ``statuses`` (unfinished ones included), or created or ended at or after ``cutoff``.

        One read of the partition, a small fraction of what deleting its rows costs."""
        marks = ", ".join(f":status_{index}" for index in range(len(statuses)))
        params: dict[str, object] = {f"status_{i}": status for i, status in enumerate(statuses)}
        params["cutoff"] = int(cutoff.timestamp())
        kept = (
            f"status NOT IN ({marks}) OR created_at >= FROM_UNIXTIME(:cutoff)"
            " OR completed_at >= FROM_UNIXTIME(:cutoff)"
        )
        row = connection.execute(
            text(
                f"SELECT COUNT(*), COALESCE(SUM(CASE WHEN {kept} THEN 1 ELSE 0 END), 0)"
                f" FROM task PARTITION ({partition})"
            ),
            params,
        ).one()
        return int(row[0]), int(row[1])

    def count_rows(self, connection: Connection, table: str, partition: str) -> int:
        sql = f"SELECT COUNT(*) FROM {table} PARTITION ({partition})"
        return int(connection.execute(text(sql)).scalar_one())

    def foreign_live_logs(self, connection: Connection, partition: str, low: str, high: str) -> int:
        """Log rows of the ``task_log`` partition that belong to a task still stored outside
        the task ids ``[low, high)``: a partition holding any of them must stay."""
        return int(
            connection.execute(
                text(
                    f"SELECT COUNT(*) FROM task_log PARTITION ({partition}) AS log"
                    " WHERE (log.task_id < :low OR log.task_id >= :high)"
                    " AND EXISTS (SELECT 1 FROM task WHERE task.task_id = log.task_id)"
                ),
                {"low": low, "high": high},
            ).scalar_one()
        )

    def delete_orphan_logs(
        self, connection: Connection, low: str, high: str, batch_size: int
    ) -> int:
        """Delete, in committed batches, the log rows of task ids ``[low, high)`` whose task
        is gone (a dropped month's logs written in later months); returns how many."""
        delete = text(
            "DELETE FROM task_log WHERE task_id >= :low AND task_id < :high"
            " AND NOT EXISTS (SELECT 1 FROM task WHERE task.task_id = task_log.task_id)"
            f" LIMIT {int(batch_size)}"
        )
        deleted = 0
        while True:
            count = connection.execute(delete, {"low": low, "high": high}).rowcount
            connection.commit()
            deleted += count
            if count < batch_size:
                return deleted
