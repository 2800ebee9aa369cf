"""Everything that differs between SQLite and MySQL/MariaDB, in one place.

A :class:`DialectProfile` knows how to set up a connection, how a claim locks its rows and
how to read the driver's errors. The rest of the library asks the profile and never tests
the dialect name itself.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import URL, Engine, event
from sqlalchemy.engine import Connection, Dialect
from sqlalchemy.exc import DBAPIError, DisconnectionError

from asynctaskmanager.errors import (
    AsyncTaskManagerError,
    ConfigurationError,
    DuplicateError,
    StorageError,
    TransientStorageError,
    ValidationError,
)

# Strict everywhere: a too-long value or a bad date is an error, never a silent truncation.
MYSQL_SQL_MODE = (
    "STRICT_ALL_TABLES,NO_ZERO_DATE,NO_ZERO_IN_DATE,ERROR_FOR_DIVISION_BY_ZERO,"
    "NO_ENGINE_SUBSTITUTION"
)
# '+00:00', not 'UTC': the named zone needs the server's time-zone tables, often not loaded.
MYSQL_INIT_COMMAND = f"SET time_zone = '+00:00', sql_mode = '{MYSQL_SQL_MODE}'"

# A Connection execution option: this unit of work only reads (see _sqlite_configure).
READ_ONLY = "asynctaskmanager_read_only"

_MYSQL_DUPLICATE = {1062}
_MYSQL_TRANSIENT = {
    1205,  # lock wait timeout
    1213,  # deadlock
    1927,  # connection killed
    2006,  # server has gone away
    2013,  # lost connection during query
    2055,  # lost connection (system error)
    4031,  # disconnected by the server for inactivity
    1053,  # server shutdown in progress
    1290,  # read-only (e.g. during a fail-over)
    1317,  # query interrupted (KILL QUERY): the unit of work is rolled back and rerun
    2002,  # can't connect through the socket (server restarting)
    2003,  # can't connect over TCP (server restarting): nothing was sent, safe to rerun
}
_MYSQL_BAD_VALUE = {1048, 1264, 1292, 1366, 1406, 3140, 4025}


@dataclass(frozen=True)
class ErrorKind:
    duplicate: bool = False
    transient: bool = False
    bad_value: bool = False


@dataclass(frozen=True)
class DialectProfile:
    name: str
    engine_options: Callable[[URL], dict[str, Any]]
    configure: Callable[[Engine], None]
    classify: Callable[[DBAPIError], ErrorKind]
    index_names_are_per_table: bool
    keys_need_binary_collation: bool
    single_writer: bool
    supports_skip_locked: Callable[[Dialect], bool]


# --- MySQL and MariaDB -------------------------------------------------------------------


def _mysql_engine_options(url: URL) -> dict[str, Any]:
    # A user's init_command (a URL query argument) stays the driver's; ours then runs at
    # connect (see _mysql_configure).
    init_command = url.query.get("init_command", MYSQL_INIT_COMMAND)
    if not isinstance(init_command, str):
        raise ConfigurationError("init_command may appear only once in the URL")
    return {
        "connect_args": {"charset": "utf8mb4", "init_command": init_command},
        # Claims and transitions touch rows by key; READ COMMITTED takes no gap locks, which
        # is what turned concurrent claimers' deadlocks into nothing in our runs.
        "isolation_level": "READ COMMITTED",
        # PyMySQL defaults to named parameters; the bulk inserts send positional rows.
        **({"paramstyle": "format"} if url.get_driver_name() == "pymysql" else {}),
    }


# A pooled connection that sat idle this long is pinged before it is handed out.
PING_AFTER_IDLE_SECONDS = 1.0


def _mysql_configure(engine: Engine) -> None:
    """The session's settings, and stale connections found before use, at a round trip only
    where one can be stale.

    An ``init_command`` of the user's (a URL query argument) is the driver's; ours then
    runs at connect, after it, so that the time zone and SQL mode stay the library's.

    pool_pre_ping would ping at every checkout: one round trip in four of a short
    transaction. A connection returned less than PING_AFTER_IDLE_SECONDS ago was just
    working; if the server went away since, its first statement fails, the pool is
    invalidated, and the unit of work is rerun on a fresh connection (Storage.run), as for
    any connection lost mid-transaction.
    """
    dbapi_error = engine.dialect.loaded_dbapi.Error
    if "init_command" in engine.url.query:
        # First among the connect listeners: the dialect reads sql_mode (ANSI_QUOTES,
        # NO_BACKSLASH_ESCAPES) on the first connection, and must see ours.
        @event.listens_for(engine, "connect", insert=True)
        def _on_connect(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            try:
                cursor.execute(MYSQL_INIT_COMMAND)
            finally:
                cursor.close()

    @event.listens_for(engine, "checkin")
    def _on_checkin(_dbapi_connection: Any, record: Any) -> None:
        record.info["idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _on_checkout(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        idle_since = record.info.get("idle_since")
        if idle_since is None or time.monotonic() - idle_since < PING_AFTER_IDLE_SECONDS:
            return
        try:
            # The dialect's ping never reconnects by itself (PyMySQL's would, and lose the
            # session's isolation level and time zone).
            engine.dialect.do_ping(dbapi_connection)
        except dbapi_error as error:
            # The pool replaces the connection and checks out again.
            raise DisconnectionError("stale connection found by ping") from error


def _mysql_classify(error: DBAPIError) -> ErrorKind:
    if error.connection_invalidated:
        return ErrorKind(transient=True)
    args = getattr(error.orig, "args", ())
    code = args[0] if args and isinstance(args[0], int) else None
    if code in _MYSQL_DUPLICATE:
        return ErrorKind(duplicate=True)
    if code in _MYSQL_TRANSIENT:
        return ErrorKind(transient=True)
    if code in _MYSQL_BAD_VALUE:
        return ErrorKind(bad_value=True)
    return ErrorKind()


def _mysql_skip_locked(dialect: Dialect) -> bool:
    version = dialect.server_version_info or (0,)
    if getattr(dialect, "is_mariadb", False):
        return version >= (10, 6)
    return version >= (8, 0, 1)


MYSQL = DialectProfile(
    name="mysql",
    engine_options=_mysql_engine_options,
    configure=_mysql_configure,
    classify=_mysql_classify,
    index_names_are_per_table=True,
    keys_need_binary_collation=True,
    single_writer=False,
    supports_skip_locked=_mysql_skip_locked,
)


# --- SQLite ------------------------------------------------------------------------------


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
            if engine.url.database not in (None, "", ":memory:"):
                cursor.execute("PRAGMA journal_mode = WAL")
                cursor.execute("PRAGMA synchronous = NORMAL")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Connection) -> None:
        read_only = connection.get_execution_options().get(READ_ONLY, False)
        connection.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")


def _sqlite_classify(error: DBAPIError) -> ErrorKind:
    message = str(error.orig).lower()
    if "unique constraint failed" in message:
        return ErrorKind(duplicate=True)
    if "database is locked" in message or "database is busy" in message:
        return ErrorKind(transient=True)
    if "constraint failed" in message or "datatype mismatch" in message:
        return ErrorKind(bad_value=True)
    return ErrorKind()


SQLITE = DialectProfile(
    name="sqlite",
    engine_options=_sqlite_engine_options,
    configure=_sqlite_configure,
    classify=_sqlite_classify,
    index_names_are_per_table=False,
    keys_need_binary_collation=False,
    single_writer=True,
    supports_skip_locked=lambda _dialect: False,
)


_PROFILES = {"mysql": MYSQL, "mariadb": MYSQL, "sqlite": SQLITE}


def profile_for(dialect_name: str) -> DialectProfile:
    try:
        return _PROFILES[dialect_name]
    except KeyError:
        supported = ", ".join(sorted(_PROFILES))
        raise ConfigurationError(
            f"unsupported database {dialect_name!r}; supported: {supported}"
        ) from None


def translate(
    error: DBAPIError,
    profile: DialectProfile,
    entity: str = "record",
    key: str | None = None,
) -> AsyncTaskManagerError:
    """The library error for a driver error. Callers raise it ``from`` the original."""
    kind = profile.classify(error)
    detail = str(error.orig).strip() or type(error.orig).__name__
    if kind.transient:
        return TransientStorageError(f"transient database failure, safe to retry: {detail}")
    if kind.duplicate:
        return DuplicateError(entity, key)
    if kind.bad_value:
        return ValidationError(_refused_field(detail, entity), "refused by the database", detail)
    return StorageError(f"database error: {detail}")


# Where the drivers name the column of a refused value: MySQL's "Column 'x' cannot be null",
# "... for column 'x'", "... for column `db`.`t`.`x`", "CONSTRAINT `t.x` failed"; SQLite's
# "NOT NULL constraint failed: t.x".
_REFUSED_FIELD = (
    re.compile(r"column '([^']+)'", re.IGNORECASE),
    re.compile(r"column ((?:`[^`]+`\.?)+)", re.IGNORECASE),
    re.compile(r"CONSTRAINT `([^`]+)` failed"),
    re.compile(r"constraint failed: ([\w.]+)"),
)


def _refused_field(detail: str, entity: str) -> str:
    for pattern in _REFUSED_FIELD:
        match = pattern.search(detail)
        if match:
            return match.group(1).replace("`", "").rsplit(".", 1)[-1]
    return entity
