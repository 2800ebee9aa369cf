"""The transaction runner: units of work on one engine, and reruns of the transient failures.

The queue, retention and the repositories' one-call transactions all run through a
:class:`TransactionRunner`; it knows the engine and the dialect profile, and nothing above it.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from typing import TypeVar

from sqlalchemy import Dialect, Engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

from asynctaskmanager.errors import StorageError, TransientStorageError
from asynctaskmanager.infrastructure.dialects import ClusterInfo, DialectProfile
from asynctaskmanager.infrastructure.unit_of_work import UnitOfWork

T = TypeVar("T")


class TransactionRetry:
    """Deadlocks, lock-wait timeouts and dropped connections retried at the transaction edge.

    Full jitter on an exponential ceiling, so that colliding workers spread out. On a cluster
    a transaction rolled back by a certification conflict gets ``conflict_attempts`` runs:
    claimers on different nodes collide as a matter of course there, not by accident.
    """

    def __init__(
        self,
        attempts: int = 6,
        base_delay: float = 0.005,
        max_delay: float = 0.5,
        conflict_attempts: int = 30,
    ) -> None:
        self.attempts = attempts
        self.conflict_attempts = conflict_attempts
        self.base_delay = base_delay
        self.max_delay = max_delay

    def pause(self, attempt: int) -> None:
        time.sleep(random.uniform(0, min(self.max_delay, self.base_delay * 2**attempt)))


class SingleWriterGuard:
    """Refuses a second unit of work in the thread that has one open, and may serialise.

    SQLite has one writer at a time: a thread that opens a unit of work inside its own open
    one would wait for itself until the busy timeout. On the in-memory database (one shared
    connection, not safe for concurrent writers: crashes and lost rows were seen) the guard
    also holds a lock for the whole unit of work.
    """

    def __init__(self, *, serialise: bool) -> None:
        self._lock = threading.Lock() if serialise else None
        self._owner = threading.local()

    def __enter__(self) -> None:
        if getattr(self._owner, "held", False):
            raise StorageError(
                "SQLite has one writer: a unit of work cannot open inside another in the same "
                "thread; use the open one's repositories"
            )
        if self._lock is not None:
            self._lock.acquire()
        self._owner.held = True

    def __exit__(self, *exc_info: object) -> None:
        self._owner.held = False
        if self._lock is not None:
            self._lock.release()


class TransactionRunner:
    """Opens units of work on ``engine`` and runs work in them with retries."""

    def __init__(
        self, engine: Engine, profile: DialectProfile, retry: TransactionRetry | None = None
    ) -> None:
        self.engine = engine
        self.profile = profile
        self.retry = retry or TransactionRetry()
        self.guard = (
            SingleWriterGuard(serialise=profile.serialise_writers)
            if profile.single_writer
            else None
        )

    @property
    def dialect(self) -> Dialect:
        return self.engine.dialect

    def skip_locked(self) -> bool:
        """Whether this server can claim with FOR UPDATE SKIP LOCKED (known once connected)."""
        return self.profile.supports_skip_locked(self.engine.dialect)

    @property
    def cluster(self) -> ClusterInfo:
        """Whether the database is one node of a cluster, as the server said at the first
        connection (before it: not a cluster)."""
        return self.profile.cluster(self.engine)

    def unit_of_work(self, *, read_only: bool = False, sync_wait: bool = False) -> UnitOfWork:
        return UnitOfWork(
            self.engine, self.profile, self.guard, read_only=read_only, sync_wait=sync_wait
        )

    def run(
        self,
        work: Callable[[UnitOfWork], T],
        *,
        read_only: bool = False,
        sync_wait: bool = False,
    ) -> T:
        """Run ``work`` in one transaction and commit it, retrying transient failures.

        ``work`` may run more than once, so it must not have effects outside the database.
        A COMMIT whose outcome is unknown is never rerun, nor a wait for the pool that
        already lasted the pool's timeout. ``sync_wait``: see :class:`UnitOfWork`.
        """
        attempt = 0
        while True:
            try:
                with self.unit_of_work(read_only=read_only, sync_wait=sync_wait) as uow:
                    result = work(uow)
                    uow.commit()
                    return result
            except TransientStorageError as error:
                attempt += 1
                waited_for_pool = isinstance(error.__cause__, PoolTimeoutError)
                if error.outcome_unknown or waited_for_pool or attempt >= self._budget(error):
                    raise
                self.retry.pause(attempt)

    def _budget(self, error: TransientStorageError) -> int:
        cause = error.__cause__
        conflict = isinstance(cause, DBAPIError) and self.profile.classify(cause).rolled_back
        if conflict and self.cluster.is_cluster:
            return max(self.retry.attempts, self.retry.conflict_attempts)
        return self.retry.attempts
