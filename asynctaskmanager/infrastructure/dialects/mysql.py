"""MySQL and MariaDB through mysqlclient (or PyMySQL): session settings, stale connections,
error codes, SKIP LOCKED."""

from __future__ import annotations

import weakref
from datetime import datetime
from typing import Any

from sqlalchemy import URL, Connection, Engine, Executable, case, event, text
from sqlalchemy.dialects import mysql
from sqlalchemy.engine import Dialect, ExceptionContext
from sqlalchemy.exc import DBAPIError

from asynctaskmanager.errors import ConfigurationError
from asynctaskmanager.infrastructure.dialects.pooling import ping_after_idle
from asynctaskmanager.infrastructure.dialects.profile import (
    NOT_A_CLUSTER,
    SYNC_WAIT_SET,
    ClusterInfo,
    DialectProfile,
    ErrorKind,
)
from asynctaskmanager.infrastructure.hosts import HOSTS_QUERY, parse_hosts
from asynctaskmanager.infrastructure.schema import lease_table as lease

# Strict everywhere: a too-long value or a bad date is an error, never a silent truncation.
MYSQL_SQL_MODE = (
    "STRICT_ALL_TABLES,NO_ZERO_DATE,NO_ZERO_IN_DATE,ERROR_FOR_DIVISION_BY_ZERO,"
    "NO_ENGINE_SUBSTITUTION"
)
# '+00:00', not 'UTC': the named zone needs the server's time-zone tables, often not loaded.
MYSQL_INIT_COMMAND = f"SET time_zone = '+00:00', sql_mode = '{MYSQL_SQL_MODE}'"

_MYSQL_DUPLICATE = {1062}
# The whole transaction was rolled back: a deadlock, or on Galera a certification conflict
# (another node's commit took the same rows first), which surfaces at COMMIT.
_MYSQL_ROLLED_BACK = {1213}
_MYSQL_TRANSIENT = {
    1205,  # lock wait timeout (on Galera also a wsrep_sync_wait timeout)
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
# The node, not the statement, is unusable (it left the cluster's quorum): its connections are
# dropped so that the rerun connects again, to the first host of the list that is ready.
# 1047: Galera's "WSREP has not yet prepared node" (MySQL's "unknown command" too; only the
# one that names WSREP counts). 1180: "Got error during COMMIT", a node losing the quorum
# mid-commit: transient, and at COMMIT of unknown outcome.
_NODE_UNUSABLE = {1047, 1180}
_WSREP_NOT_READY = 1047

# A multi-host URL gives up on a host that does not answer within this many seconds.
MULTI_HOST_CONNECT_TIMEOUT_S = 5
# Reads that wait until the node has applied every commit the cluster made before them (1:
# READ statements), and the session's default back.
SYNC_WAIT = ("SET SESSION wsrep_sync_wait = 1", "SET SESSION wsrep_sync_wait = DEFAULT")
# What each engine's server said at its first connection (see read_cluster_info).
_CLUSTERS: weakref.WeakKeyDictionary[Dialect, ClusterInfo] = weakref.WeakKeyDictionary()


def _mysql_engine_options(url: URL) -> dict[str, Any]:
    # A user's init_command (a URL query argument) stays the driver's; ours then runs at
    # connect (see _mysql_configure).
    init_command = url.query.get("init_command", MYSQL_INIT_COMMAND)
    if not isinstance(init_command, str):
        raise ConfigurationError("init_command may appear only once in the URL")
    connect_args: dict[str, Any] = {"charset": "utf8mb4", "init_command": init_command}
    if HOSTS_QUERY in url.query and "connect_timeout" not in url.query:
        connect_args["connect_timeout"] = MULTI_HOST_CONNECT_TIMEOUT_S
    return {
        "connect_args": connect_args,
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

    dbapi_error = engine.dialect.loaded_dbapi.Error

    @event.listens_for(engine, "checkin")
    def _on_checkin_reset_sync_wait(dbapi_connection: Any, record: Any) -> None:
        if record.info.pop(SYNC_WAIT_SET, False) and dbapi_connection is not None:
            try:
                _execute(dbapi_connection, SYNC_WAIT[1])
            except dbapi_error as error:
                record.invalidate(error)

    @event.listens_for(engine, "connect")
    def _on_connect_detect_cluster(dbapi_connection: Any, _record: Any) -> None:
        if engine.dialect not in _CLUSTERS:
            _CLUSTERS[engine.dialect] = read_cluster_info(dbapi_connection)

    @event.listens_for(engine, "handle_error")
    def _on_error_drop_unusable_node(context: ExceptionContext) -> None:
        if _node_unusable(context.original_exception):
            context.is_disconnect = True

    if HOSTS_QUERY in engine.url.query:
        event.listen(engine, "do_connect", _connect_to_first_ready_host)

    ping_after_idle(engine)


def _execute(dbapi_connection: Any, statement: str) -> list[Any]:
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute(statement)
        return list(cursor.fetchall() or ())
    finally:
        cursor.close()


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def read_cluster_info(dbapi_connection: Any) -> ClusterInfo:
    """Galera when ``wsrep_on`` is ON; MySQL has no such variable, a plain MariaDB has it OFF."""
    rows = _execute(dbapi_connection, "SHOW GLOBAL VARIABLES LIKE 'wsrep_on'")
    return ClusterInfo(galera=bool(rows) and _text(rows[0][1]).upper() == "ON")


def _mysql_cluster(engine: Engine) -> ClusterInfo:
    return _CLUSTERS.get(engine.dialect, NOT_A_CLUSTER)


CLUSTER_STATUS = (
    "wsrep_cluster_size",
    "wsrep_cluster_status",
    "wsrep_ready",
    "wsrep_local_index",
    "wsrep_local_state_comment",
)


def cluster_status(connection: Connection) -> dict[str, str]:
    """This node's view of its cluster (the ``wsrep_`` status variables of CLUSTER_STATUS)."""
    rows = connection.execute(
        text("SHOW GLOBAL STATUS WHERE Variable_name IN :names").bindparams(
            names=list(CLUSTER_STATUS)
        )
    )
    return {_text(name).lower(): _text(value) for name, value in rows}


def _node_ready(dbapi_connection: Any) -> bool:
    """False on a Galera node that cannot serve (out of the quorum, still joining): every
    statement there would fail with 1047."""
    if not read_cluster_info(dbapi_connection).is_cluster:
        return True
    rows = _execute(dbapi_connection, "SHOW GLOBAL STATUS LIKE 'wsrep_ready'")
    return bool(rows) and _text(rows[0][1]).upper() == "ON"


def _connect_to_first_ready_host(
    dialect: Dialect, _record: Any, cargs: list[Any], cparams: dict[str, Any]
) -> Any:
    """A connection to the first host of the URL's list that answers and is ready, so that
    when a node dies the pool's next connection goes to another."""
    dbapi = dialect.loaded_dbapi
    params = {key: value for key, value in cparams.items() if key != HOSTS_QUERY}
    failures: list[Exception] = []
    for host, port in parse_hosts(str(cparams[HOSTS_QUERY])):
        try:
            dbapi_connection = dbapi.connect(*cargs, **(params | {"host": host, "port": port}))
        except dbapi.OperationalError as error:
            failures.append(error)
            continue
        try:
            if _node_ready(dbapi_connection):
                return dbapi_connection
            failures.append(
                dbapi.OperationalError(_WSREP_NOT_READY, f"{host}:{port}: WSREP node not ready")
            )
        except dbapi.Error as error:
            failures.append(error)
        dbapi_connection.close()
    # The last host's error, a connection failure the library already reads as transient.
    raise failures[-1]


def _code(error: BaseException | None) -> int | None:
    args = getattr(error, "args", ())
    return args[0] if args and isinstance(args[0], int) else None


def _node_unusable(error: BaseException | None) -> bool:
    code = _code(error)
    if code == _WSREP_NOT_READY:
        return "WSREP" in str(error)
    return code in _NODE_UNUSABLE


def _mysql_classify(error: DBAPIError) -> ErrorKind:
    if error.connection_invalidated:
        return ErrorKind(transient=True)
    if _node_unusable(error.orig):
        return ErrorKind(transient=True)
    code = _code(error.orig)
    if code in _MYSQL_DUPLICATE:
        return ErrorKind(duplicate=True)
    if code in _MYSQL_ROLLED_BACK:
        return ErrorKind(transient=True, rolled_back=True)
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
    cluster=_mysql_cluster,
    sync_wait=SYNC_WAIT,
    driver_hint="pip install 'asynctaskmanager[mysql]' (mysqlclient)",
)
