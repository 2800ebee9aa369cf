"""Engines that survive ``os.fork``: a child process never uses its parent's connections.

A socket (or SQLite handle) shared by two processes interleaves their packets: on MariaDB an
error or a hang, on SQLite a corrupt lock state. SQLAlchemy's documented remedies, both
applied ("Using Connection Pools with Multiprocessing or os.fork()"):

- after a fork, the child replaces the pool it inherited without closing the parent's
  connections (``engine.dispose(close=False)``);
- each connection records the process that opened it, and a checkout in another process
  discards it unclosed, for a connection that was checked out during the fork.
"""

from __future__ import annotations

import os
import weakref
from typing import Any

from sqlalchemy import Engine, event
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.pool import StaticPool

_OWNER_PID = "asynctaskmanager.owner_pid"


def install_fork_safety(engine: Engine) -> None:
    """Make ``engine`` safe to use in a child of the process that built it.

    Not for a single static connection (the memory backend): that connection is the whole
    database, and the child works on its own copy of it.
    """
    if isinstance(engine.pool, StaticPool):
        return

    @event.listens_for(engine, "connect")
    def _record_owner(_dbapi_connection: Any, record: Any) -> None:
        record.info[_OWNER_PID] = os.getpid()

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
        if inherited is not None:
            inherited.dispose(close=False)

    os.register_at_fork(after_in_child=_replace_pool_in_child)
