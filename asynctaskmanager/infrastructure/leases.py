"""Named leases: a lock held by one holder until it expires, by the database's clock.

A lease is one row of ``lease``. Taking it and renewing it are the same guarded upsert: the
row is written for ``holder`` only where it is missing, expired (``expires_at < now``) or
already held by ``holder``. The row lock (or, on a Galera cluster, the certification of the
write) serialises two contenders, so at most one of them holds the lease at any moment,
cluster-wide, unlike ``GET_LOCK()``, which is node-local on Galera.

A holder that dies simply stops renewing: the lease passes to the next contender once it
expires. Time is whole seconds (TIMESTAMP), so a lease lasts at least ``ttl`` and at most
one second more.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, case, delete, select
from sqlalchemy.dialects import mysql, postgresql, sqlite

from asynctaskmanager.domain import validation as check
from asynctaskmanager.errors import ValidationError
from asynctaskmanager.infrastructure.expressions import db_now
from asynctaskmanager.infrastructure.schema import lease_table as lease

if TYPE_CHECKING:
    from asynctaskmanager.infrastructure.storage import Storage
    from asynctaskmanager.infrastructure.unit_of_work import UnitOfWork

# Keeps expires_at inside TIMESTAMP's range however long a caller asks for.
TTL_MAX = timedelta(days=1)


class Leases:
    """``leases = Leases(storage)``; ``leases.acquire("sweep", worker_id, ttl)`` and
    ``leases.release("sweep", worker_id)``. Each call is one retried transaction."""

    def __init__(self, storage: Storage) -> None:
        self._storage = storage

    def acquire(self, name: str, holder: str, ttl: timedelta) -> bool:
        """Take ``name`` for ``holder`` for ``ttl`` (at least one second), or renew it if
        ``holder`` has it already. Returns whether ``holder`` holds it now."""
        check.identifier("name", name)
        check.identifier("holder", holder)
        if not isinstance(ttl, timedelta) or not timedelta(seconds=1) <= ttl <= TTL_MAX:
            raise ValidationError("ttl", f"must be a timedelta from 1 second to {TTL_MAX}", ttl)

        def work(uow: UnitOfWork) -> bool:
            connection = uow.connection
            now = connection.execute(select(db_now())).scalar_one()
            _upsert(connection, name, holder, now, now + ttl)
            # Read back under the row lock the upsert holds: MySQL's affected-row count
            # cannot tell "renewed within the same second" from "someone else's".
            current = connection.execute(
                select(lease.c.holder).where(lease.c.name == name)
            ).scalar_one()
            return bool(current == holder)

        return self._storage.run(work)

    def release(self, name: str, holder: str) -> bool:
        """Give ``name`` up, if ``holder`` holds it (expired or not). Returns whether it did."""
        check.identifier("name", name)
        check.identifier("holder", holder)
        statement = delete(lease).where(lease.c.name == name, lease.c.holder == holder)
        return self._storage.run(lambda uow: bool(uow.connection.execute(statement).rowcount == 1))

    def holder(self, name: str) -> str | None:
        """Who holds ``name`` now by the database's clock; None if nobody does."""
        check.identifier("name", name)
        query = select(lease.c.holder).where(lease.c.name == name, lease.c.expires_at >= db_now())
        return self._storage.run(
            lambda uow: uow.connection.execute(query).scalar_one_or_none(), read_only=True
        )


def _upsert(
    connection: Connection, name: str, holder: str, now: datetime, expires_at: datetime
) -> None:
    """One statement: insert the lease, or overwrite it only where it is free for ``holder``."""
    values: dict[str, Any] = {"name": name, "holder": holder, "expires_at": expires_at}
    dialect = connection.dialect.name
    if dialect in ("mysql", "mariadb"):
        insert = mysql.insert(lease).values(values)
        free = (lease.c.expires_at < now) | (lease.c.holder == holder)
        # Assignments apply left to right: holder first, so that expires_at follows it
        # exactly when the lease changed hands (or was ours already).
        statement = insert.on_duplicate_key_update(
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
        connection.execute(statement)
        return
    if dialect == "postgresql":
        upsert: Any = postgresql.insert(lease).values(values)
    else:
        upsert = sqlite.insert(lease).values(values)
    connection.execute(
        upsert.on_conflict_do_update(
            index_elements=[lease.c.name],
            set_={"holder": upsert.excluded.holder, "expires_at": upsert.excluded.expires_at},
            where=(lease.c.expires_at < now) | (lease.c.holder == holder),
        )
    )
