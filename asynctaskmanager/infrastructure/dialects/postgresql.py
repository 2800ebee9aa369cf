"""PostgreSQL through psycopg 3: the session's time zone, READ COMMITTED, SQLSTATE classes,
SKIP LOCKED (every supported server has it)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, cast

from sqlalchemy import URL, Connection, Engine, text
from sqlalchemy.exc import DataError, DBAPIError, OperationalError

from asynctaskmanager.errors import ConfigurationError
from asynctaskmanager.infrastructure.dialects.leases import take_lease_postgresql
from asynctaskmanager.infrastructure.dialects.pooling import ping_after_idle
from asynctaskmanager.infrastructure.dialects.profile import DialectProfile, ErrorKind, WorkChannel

# Sent in the startup packet: no round trip. Timestamps are bound with their offset and read
# back converted to UTC (types.UTCDateTime), so the zone cannot shift a stored instant; UTC
# keeps the server's own rendering (psql, logs, ::text) in UTC too.
POSTGRES_SESSION_OPTIONS = "-c timezone=UTC"

_DUPLICATE = {"23505"}  # unique_violation
_TRANSIENT = {
    "40001",  # serialization_failure
    "40P01",  # deadlock_detected
    "55P03",  # lock_not_available (lock_timeout)
    "57014",  # query_canceled (statement_timeout, pg_cancel_backend), like MySQL's KILL QUERY
    "57P01",  # admin_shutdown (pg_terminate_backend, smart/fast shutdown)
    "57P02",  # crash_shutdown
    "57P03",  # cannot_connect_now (starting up, shutting down)
    "53300",  # too_many_connections: refused at connect, nothing was sent
    "25006",  # read_only_sql_transaction: a standby during a fail-over, like MySQL's 1290
}
_TRANSIENT_CLASSES = {"08"}  # connection_exception and its subclasses
_BAD_VALUE = {"23502", "23514"}  # not_null_violation, check_violation
_BAD_VALUE_CLASSES = {"22"}  # data_exception: too long, out of range, bad datetime, bad JSON


def _postgres_engine_options(url: URL) -> dict[str, Any]:
    # A user's own options (a URL query argument) are kept; ours come last and win.
    options = url.query.get("options", "")
    if not isinstance(options, str):
        raise ConfigurationError("options may appear only once in the URL")
    return {
        "connect_args": {"options": f"{options} {POSTGRES_SESSION_OPTIONS}".strip()},
        # PostgreSQL's default, stated so that a server configured otherwise
        # (default_transaction_isolation) cannot change how claims lock.
        "isolation_level": "READ COMMITTED",
    }


def _postgres_configure(engine: Engine) -> None:
    ping_after_idle(engine)


# The server rolled the whole transaction back: even at COMMIT nothing was applied.
_ROLLED_BACK = frozenset({"40001", "40P01"})


def _postgres_classify(error: DBAPIError) -> ErrorKind:
    if error.connection_invalidated:
        return ErrorKind(transient=True)
    sqlstate = getattr(error.orig, "sqlstate", None)
    if sqlstate is None:
        # Raised by psycopg itself, before the server answered: the connection could not be
        # made or was lost; or a value it cannot send (a NUL character in text).
        return ErrorKind(
            transient=isinstance(error, OperationalError), bad_value=isinstance(error, DataError)
        )
    if sqlstate in _DUPLICATE:
        return ErrorKind(duplicate=True, key=_duplicate_key(error))
    if sqlstate in _ROLLED_BACK:
        return ErrorKind(transient=True, rolled_back=True)
    if sqlstate in _TRANSIENT or sqlstate[:2] in _TRANSIENT_CLASSES:
        return ErrorKind(transient=True)
    if sqlstate in _BAD_VALUE or sqlstate[:2] in _BAD_VALUE_CLASSES:
        return ErrorKind(bad_value=True)
    return ErrorKind()


# "Key (task_id)=(t-1) already exists.": fixed text on both sides, so a key holding
# parentheses or "=" is still read whole.
_DUPLICATE_DETAIL = re.compile(r"\AKey \([^)]*\)=\((.*)\) already exists\.\Z", re.DOTALL)


def _duplicate_key(error: DBAPIError) -> str | None:
    """The key a unique violation names. On PostgreSQL a failed statement ends the
    transaction's usefulness, so the key cannot be looked up afterwards as elsewhere."""
    diag = getattr(error.orig, "diag", None)
    match = _DUPLICATE_DETAIL.match(getattr(diag, "message_detail", None) or "")
    return match.group(1) if match else None


# LISTEN/NOTIFY: an enqueue notifies this channel with each of its task types.
WORK_CHANNEL = "asynctaskmanager_work"
_NOTIFY = text(
    f"SELECT pg_notify('{WORK_CHANNEL}', task_type) FROM unnest(CAST(:types AS text[])) "
    "AS task_type"
)


def _notify_work(connection: Connection, task_types: Sequence[str]) -> None:
    # Delivered at COMMIT, and only then; the same type twice in a transaction is one
    # notification.
    connection.execute(_NOTIFY, {"types": list(task_types)})


class _Listener:
    """A connection of its own, taken out of the pool for good, in autocommit, listening."""

    def __init__(self, engine: Engine) -> None:
        proxied = engine.raw_connection()
        proxied.detach()  # never returned to the pool: it is LISTENing
        self._connection: Any = cast(Any, proxied.dbapi_connection)  # a psycopg Connection
        try:
            self._connection.rollback()
            self._connection.autocommit = True
            self._connection.execute(f"LISTEN {WORK_CHANNEL}")
        except BaseException:
            self._connection.close()
            raise

    def wait(self, timeout: float) -> list[str]:
        return [
            notification.payload
            for notification in self._connection.notifies(timeout=timeout, stop_after=1)
        ]

    def close(self) -> None:
        self._connection.close()


PROFILE = DialectProfile(
    name="postgresql",
    engine_options=_postgres_engine_options,
    configure=_postgres_configure,
    classify=_postgres_classify,
    # FOR UPDATE SKIP LOCKED: PostgreSQL 9.5 and later, older than any supported release.
    supports_skip_locked=lambda _dialect: True,
    take_lease=take_lease_postgresql,
    driver_hint="pip install 'asynctaskmanager[postgres]' (psycopg 3)",
    work_channel=WorkChannel(notify=_notify_work, listen=_Listener),
)
