"""Engines that survive ``os.fork``: a child process never uses its parent's connections.

A socket (or SQLite handle) shared by two processes interleaves their packets: on MariaDB an
error or a hang, on SQLite a corrupt lock state. SQLAlchemy's documented remedies, both
applied ("Using Connection Pools with Multiprocessing or os.fork()"):

- after a fork, the child replaces the pool it inherited without closing the parent's
  connections (``engine.dispose(close=False)``);
- each connection records the process that opened it, and a checkout in another process
  discards it unclosed, for a connection that was checked out during the fork.

"Unclosed" is not enough by itself: when the child drops a driver connection, the driver
closes it as it is freed (mysqlclient sends COM_QUIT, psycopg a Terminate message), on the
socket the parent still uses, and the server ends the parent's session (seen as 2013 in
the parent, now and then, when the child's garbage collector ran). So in the child, every
inherited socket is first pointed at /dev/null (``dup2`` on the child's own descriptor):
whatever the driver sends from the child goes nowhere, and the parent's socket is untouched.
"""

from __future__ import annotations

import contextlib
import os
import weakref
from typing import Any

from sqlalchemy import Engine, event
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.pool import StaticPool

_OWNER_PID = "asynctaskmanager.owner_pid"
_SOCKET = "asynctaskmanager.socket"


def _socket_of(dbapi_connection: Any) -> int | None:
    """The descriptor of the driver connection's socket, where the driver tells it."""
    fileno = getattr(dbapi_connection, "fileno", None)
    if fileno is None:  # PyMySQL keeps it on its socket object
        fileno = getattr(getattr(dbapi_connection, "_sock", None), "fileno", None)
    try:
        return int(fileno()) if callable(fileno) else None
    except Exception:
        return None


def _silence(descriptors: list[int]) -> None:
    """Point each inherited socket descriptor of this (child) process at /dev/null."""
    if not descriptors:
        return
    null = os.open(os.devnull, os.O_RDWR)
    try:
        for descriptor in descriptors:
            with contextlib.suppress(OSError):  # already closed in this process
                os.dup2(null, descriptor)
    finally:
        os.close(null)


def install_fork_safety(engine: Engine) -> None:
    """Make ``engine`` safe to use in a child of the process that built it.

    Not for a single static connection (the memory backend): that connection is the whole
    database, and the child works on its own copy of it.
    """
    if isinstance(engine.pool, StaticPool):
        return

    records: weakref.WeakSet[Any] = weakref.WeakSet()

    @event.listens_for(engine, "connect")
    def _record_owner(dbapi_connection: Any, record: Any) -> None:
        record.info[_OWNER_PID] = os.getpid()
        record.info[_SOCKET] = _socket_of(dbapi_connection)
        records.add(record)

    # First among the checkout listeners: nothing may touch a connection of another process.
    @event.listens_for(engine, "checkout", insert=True)
    def _refuse_foreign(_dbapi_connection: Any, record: Any, proxy: Any) -> None:
        owner = record.info.get(_OWNER_PID)
        if owner is not None and owner != os.getpid():
            # Dropped without closing: closing would end the parent's session too.
            record.dbapi_connection = proxy.dbapi_connection = None
            raise DisconnectionError(f"connection opened by process {owner}, not this one")

    engine_ref = weakref.ref(engine)

    def _replace_pool_in_child() -> None:
        inherited = engine_ref()
        if inherited is None:
            return
        _silence(
            [
                record.info[_SOCKET]
                for record in list(records)
                if record.dbapi_connection is not None and record.info.get(_SOCKET) is not None
            ]
        )
        inherited.dispose(close=False)

    os.register_at_fork(after_in_child=_replace_pool_in_child)
