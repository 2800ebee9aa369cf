"""Stale pooled connections, found before use at a round trip only where one can be stale.

Shared by the server dialects (MySQL, PostgreSQL).
"""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import Engine, event
from sqlalchemy.exc import DisconnectionError

# A pooled connection that sat idle this long is pinged before it is handed out.
PING_AFTER_IDLE_SECONDS = 1.0


def ping_after_idle(engine: Engine) -> None:
    """Ping a pooled connection at checkout only if it sat idle for PING_AFTER_IDLE_SECONDS.

    pool_pre_ping would ping at every checkout: one round trip in four of a short
    transaction. A connection returned less than PING_AFTER_IDLE_SECONDS ago was just
    working; if the server went away since, its first statement fails, the pool is
    invalidated, and the unit of work is rerun on a fresh connection (Storage.run), as for
    any connection lost mid-transaction.
    """
    dbapi_error = engine.dialect.loaded_dbapi.Error

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
