"""SQLite, in a file or in memory: one writer at a time, BEGIN IMMEDIATE for writers."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from sqlalchemy import URL, Engine, event
from sqlalchemy.exc import DBAPIError
from sqlalchemy.pool import StaticPool

from asynctaskmanager.infrastructure.dialects.leases import take_lease_sqlite
from asynctaskmanager.infrastructure.dialects.profile import READ_ONLY, DialectProfile, ErrorKind


def is_memory(url: URL) -> bool:
    return url.get_backend_name() == "sqlite" and url.database in (None, "", ":memory:")


def _sqlite_engine_options(_url: URL) -> dict[str, Any]:
    return {"connect_args": {"check_same_thread": False, "timeout": 30}}


def _sqlite_configure(engine: Engine) -> None:
    """Writers take the database lock when their transaction begins; readers never do.

    SQLite ignores FOR UPDATE, so a claim's select-then-update is only safe if no other
    writer can come between the two: BEGIN IMMEDIATE makes every transaction a writer
    from its first statement. A read-only unit of work begins deferred instead, so that
    under WAL it reads its snapshot without waiting for a writer or holding one up.
    pysqlite's own transaction handling is switched off so that SQLAlchemy's BEGIN is the
    only one.
    """

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute("PRAGMA foreign_keys = ON")
            cursor.execute("PRAGMA busy_timeout = 30000")
            if not is_memory(engine.url):
                cursor.execute("PRAGMA journal_mode = WAL")
                cursor.execute("PRAGMA synchronous = NORMAL")
        finally:
            cursor.close()

    # The BEGIN goes through the dialect's do_begin, not a "begin" event listener: any
    # connection event on the engine makes SQLAlchemy dispatch its (empty) before/after
    # execute events around every statement, and the listener's exec_driver_sql built an
    # execution context for the BEGIN; together a tenth of a short transaction's CPU. Called
    # inside SQLAlchemy's error handling, a failed BEGIN is a DBAPIError like any statement's.
    def _do_begin(dbapi_connection: Any) -> None:
        read_only = dbapi_connection.info.get(READ_ONLY, False)
        dbapi_connection.driver_connection.execute("BEGIN" if read_only else "BEGIN IMMEDIATE")

    engine.dialect.do_begin = _do_begin  # type: ignore[method-assign]


def _sqlite_classify(error: DBAPIError) -> ErrorKind:
    message = str(error.orig).lower()
    if "unique constraint failed" in message:
        return ErrorKind(duplicate=True)
    if "database is locked" in message or "database is busy" in message:
        return ErrorKind(transient=True)
    if "constraint failed" in message or "datatype mismatch" in message:
        return ErrorKind(bad_value=True)
    return ErrorKind()


FILE = DialectProfile(
    name="sqlite",
    engine_options=_sqlite_engine_options,
    configure=_sqlite_configure,
    classify=_sqlite_classify,
    supports_skip_locked=lambda _dialect: False,
    take_lease=take_lease_sqlite,
    single_writer=True,
)


def _memory_engine_options(url: URL) -> dict[str, Any]:
    # One connection is the whole database; the storage serialises its users (a shared
    # connection with concurrent writers crashed Python and lost rows).
    return _sqlite_engine_options(url) | {"poolclass": StaticPool}


MEMORY = replace(
    FILE,
    name="memory",
    engine_options=_memory_engine_options,
    serialise_writers=True,
    ephemeral=True,
)
