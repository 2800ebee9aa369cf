"""The lease upsert of the dialects that have ``INSERT ... ON CONFLICT DO UPDATE ... WHERE``
(SQLite and PostgreSQL); MySQL's ``ON DUPLICATE KEY UPDATE`` is in ``mysql.py``."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from functools import partial
from typing import Any

from sqlalchemy import Executable, Table
from sqlalchemy.dialects import postgresql, sqlite

from asynctaskmanager.infrastructure.schema import lease_table as lease


def _on_conflict(
    insert: Callable[[Table], Any], values: dict[str, Any], now: datetime
) -> Executable:
    upsert = insert(lease).values(values)
    statement: Executable = upsert.on_conflict_do_update(
        index_elements=[lease.c.name],
        set_={"holder": upsert.excluded.holder, "expires_at": upsert.excluded.expires_at},
        where=(lease.c.expires_at < now) | (lease.c.holder == upsert.excluded.holder),
    )
    return statement


take_lease_sqlite = partial(_on_conflict, sqlite.insert)
take_lease_postgresql = partial(_on_conflict, postgresql.insert)
