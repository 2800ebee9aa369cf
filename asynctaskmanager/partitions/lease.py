"""A cluster-wide lease held by one row, so that one host at a time rotates partitions.

An INSERT of the lease's row (or the UPDATE of an expired one) is what excludes a second
holder: on Galera a row write is certified cluster-wide, where GET_LOCK() is node-local.

The row lives in the ``lease`` table (name, holder, expires_at) when the database has one.
Until that table exists (revision 0005, another change) the row is a ``task_log`` row with a
fixed id that is not a ULID (it sorts into the ``p_named`` partition, which rotation never
drops): task_id and log_id are the lease's name, message the holder, created_at the expiry.
"""

from __future__ import annotations

import os
import socket
import uuid
from dataclasses import dataclass

from sqlalchemy import Engine, inspect, text
from sqlalchemy.exc import DBAPIError, IntegrityError

# Whoever changes the partitions (rotate, enable, prune's whole-month drops) holds this
# lease, and runs its DDL with this lock wait at most.
LEASE_NAME = "asynctaskmanager.partitions.rotate"
LEASE_SECONDS = 600
DEFAULT_LOCK_WAIT_SECONDS = 2


@dataclass(frozen=True, slots=True)
class _Row:
    table: str
    name_column: str
    holder_column: str
    expires_column: str
    extra: str = ""  # more columns the INSERT needs, "column = value" pairs
    extra_values: str = ""


_LEASE_TABLE = _Row("lease", "name", "holder", "expires_at")
_LOG_ROW = _Row(
    "task_log", "log_id", "message", "created_at", ", task_id, log_type", ", :name, 'info'"
)


def holder_id() -> str:
    return f"{socket.gethostname()[:40]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class Lease:
    """``acquire()`` once; ``release()`` when done. Expires by itself after ``seconds``."""

    def __init__(self, engine: Engine, name: str, seconds: int) -> None:
        self._engine = engine
        self.name = name
        self.seconds = seconds
        self.holder = holder_id()
        self._row = _LEASE_TABLE if inspect(engine).has_table("lease") else _LOG_ROW

    @property
    def where(self) -> str:
        return self._row.table

    def acquire(self) -> bool:
        row = self._row
        params = {"name": self.name, "holder": self.holder, "seconds": self.seconds}
        expires = "CURRENT_TIMESTAMP + INTERVAL :seconds SECOND"
        columns = f"{row.name_column}, {row.holder_column}, {row.expires_column}{row.extra}"
        insert = text(
            f"INSERT INTO {row.table} ({columns})"
            f" VALUES (:name, :holder, {expires}{row.extra_values})"
        )
        take_over = text(
            f"UPDATE {row.table}"
            f" SET {row.holder_column} = :holder, {row.expires_column} = {expires}"
            f" WHERE {row.name_column} = :name AND {row.expires_column} < CURRENT_TIMESTAMP"
        )
        try:
            with self._engine.begin() as connection:
                connection.execute(insert, params)
            return True
        except IntegrityError:
            pass  # the row exists: take it over only if it has expired
        except DBAPIError:
            return False  # a certification conflict on Galera: another host got there first
        try:
            with self._engine.begin() as connection:
                return connection.execute(take_over, params).rowcount == 1
        except DBAPIError:
            return False

    def release(self) -> None:
        row = self._row
        with self._engine.begin() as connection:
            connection.execute(
                text(
                    f"UPDATE {row.table}"
                    f" SET {row.expires_column} = CURRENT_TIMESTAMP - INTERVAL 1 SECOND"
                    f" WHERE {row.name_column} = :name AND {row.holder_column} = :holder"
                ),
                {"name": self.name, "holder": self.holder},
            )
