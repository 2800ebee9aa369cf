"""MySQL and MariaDB through mysqlclient (or PyMySQL): session settings, stale connections,
error codes, SKIP LOCKED."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import URL, Engine, Executable, case, event
from sqlalchemy.dialects import mysql
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DBAPIError

from asynctaskmanager.errors import ConfigurationError
from asynctaskmanager.infrastructure.dialects.pooling import ping_after_idle
from asynctaskmanager.infrastructure.dialects.profile import DialectProfile, ErrorKind
from asynctaskmanager.infrastructure.schema import lease_table as lease

# Strict everywhere: a too-long value or a bad date is an error, never a silent truncation.
MYSQL_SQL_MODE = (
    "STRICT_ALL_TABLES,NO_ZERO_DATE,NO_ZERO_IN_DATE,ERROR_FOR_DIVISION_BY_ZERO,"
    "NO_ENGINE_SUBSTITUTION"
)
# '+00:00', not 'UTC': the named zone needs the server's time-zone tables, often not loaded.
MYSQL_INIT_COMMAND = f"SET time_zone = '+00:00', sql_mode = '{MYSQL_SQL_MODE}'"

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


def _mysql_configure(engine: Engine) -> None:
    """The session's settings, and stale connections found before use (see pooling).

    An ``init_command`` of the user's (a URL query argument) is the driver's; ours then
    runs at connect, after it, so that the time zone and SQL mode stay the library's.
    """
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

    ping_after_idle(engine)


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


def _take_lease(values: dict[str, Any], now: datetime) -> Executable:
    insert = mysql.insert(lease).values(values)
    free = (lease.c.expires_at < now) | (lease.c.holder == insert.inserted.holder)
    # Assignments apply left to right: holder first, so that expires_at follows it exactly
    # when the lease changed hands (or was the holder's already).
    return insert.on_duplicate_key_update(
        [
            ("holder", case((free, insert.inserted.holder), else_=lease.c.holder)),
            (
                "expires_at",
                case(
                    (lease.c.holder == insert.inserted.holder, insert.inserted.expires_at),
                    else_=lease.c.expires_at,
                ),
            ),
        ]
    )


PROFILE = DialectProfile(
    name="mysql",
    engine_options=_mysql_engine_options,
    configure=_mysql_configure,
    classify=_mysql_classify,
    supports_skip_locked=_mysql_skip_locked,
    take_lease=_take_lease,
    driver_hint="pip install 'asynctaskmanager[mysql]' (mysqlclient)",
)
