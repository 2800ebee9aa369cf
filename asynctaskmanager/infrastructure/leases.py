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

from datetime import timedelta

from sqlalchemy import delete, select

from asynctaskmanager.domain import validation as check
from asynctaskmanager.errors import ValidationError
from asynctaskmanager.infrastructure.expressions import db_now
from asynctaskmanager.infrastructure.schema import lease_table as lease
from asynctaskmanager.infrastructure.transactions import TransactionRunner
from asynctaskmanager.infrastructure.unit_of_work import UnitOfWork

# Keeps expires_at inside TIMESTAMP's range however long a caller asks for.
TTL_MAX = timedelta(days=1)


class Leases:
    """``storage.leases.acquire("sweep", worker_id, ttl)`` and
    ``storage.leases.release("sweep", worker_id)``. Each call is one retried transaction."""

    def __init__(self, runner: TransactionRunner) -> None:
        self._runner = runner

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
            values = {"name": name, "holder": holder, "expires_at": now + ttl}
            connection.execute(self._runner.profile.take_lease(values, now))
            # Read back under the row lock the upsert holds: MySQL's affected-row count
            # cannot tell "renewed within the same second" from "someone else's".
            current = connection.execute(
                select(lease.c.holder).where(lease.c.name == name)
            ).scalar_one()
            return bool(current == holder)

        return self._runner.run(work)

    def release(self, name: str, holder: str) -> bool:
        """Give ``name`` up, if ``holder`` holds it (expired or not). Returns whether it did."""
        check.identifier("name", name)
        check.identifier("holder", holder)
        statement = delete(lease).where(lease.c.name == name, lease.c.holder == holder)
        return self._runner.run(lambda uow: bool(uow.connection.execute(statement).rowcount == 1))

    def holder(self, name: str) -> str | None:
        """Who holds ``name`` now by the database's clock; None if nobody does."""
        check.identifier("name", name)
        query = select(lease.c.holder).where(lease.c.name == name, lease.c.expires_at >= db_now())
        found: str | None = self._runner.run(
            lambda uow: uow.connection.execute(query).scalar_one_or_none(), read_only=True
        )
        return found
