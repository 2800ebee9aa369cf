"""The unit of work: one transaction that several repositories share."""

from __future__ import annotations

import threading
from contextlib import AbstractContextManager, nullcontext
from types import TracebackType

from sqlalchemy import Connection, Engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

from asynctaskmanager.errors import StorageError, TransientStorageError
from asynctaskmanager.infrastructure.dialects import READ_ONLY, DialectProfile, translate
from asynctaskmanager.infrastructure.engine import TRANSACTION_ENDED
from asynctaskmanager.infrastructure.repositories import (
    SqlTaskConfigRepository,
    SqlTaskLogRepository,
    SqlTaskRepository,
    SqlWorkerRepository,
)


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


class UnitOfWork:
    """``with storage.unit_of_work() as uow: ...; uow.commit()``.

    Leaving the block without :meth:`commit` rolls everything back. Repositories never
    commit on their own.

    ``read_only=True`` promises that the block only reads. On SQLite its transaction then
    begins deferred: it reads one snapshot and neither waits for a writer nor holds one
    up (a write in it may fail with :class:`TransientStorageError` while another writer is
    busy). On MySQL it is an ordinary READ COMMITTED transaction (each statement sees the latest
    commits; InnoDB needs no hint for plain SELECTs), so only SQLite promises one snapshot.
    """

    tasks: SqlTaskRepository
    task_configs: SqlTaskConfigRepository
    task_logs: SqlTaskLogRepository
    workers: SqlWorkerRepository

    def __init__(
        self,
        engine: Engine,
        profile: DialectProfile,
        guard: SingleWriterGuard | None,
        *,
        read_only: bool = False,
    ) -> None:
        self._engine = engine
        self.read_only = read_only
        self.profile = profile
        self._guard: AbstractContextManager[object] = guard if guard is not None else nullcontext()
        self._connection: Connection | None = None
        self._committed = False

    @property
    def connection(self) -> Connection:
        """The transaction's Core connection, for statements of your own."""
        if self._connection is None:
            raise StorageError("the unit of work is not open; use it in a with block")
        return self._connection

    def __enter__(self) -> UnitOfWork:
        self._guard.__enter__()
        try:
            # A Core connection, not an ORM Session: the repositories issue Core statements
            # only, and a Session's bookkeeping was about half of a short transaction's CPU.
            connection = self._engine.connect()
            if self.read_only:
                connection.execution_options(**{READ_ONLY: True})
        except BaseException as error:
            self._guard.__exit__(None, None, None)
            if isinstance(error, DBAPIError):
                raise translate(error, self.profile) from error
            if isinstance(error, PoolTimeoutError):
                raise pool_exhausted() from error
            raise
        self._connection = connection
        self._committed = False
        self.tasks = SqlTaskRepository(connection, self.profile)
        self.task_configs = SqlTaskConfigRepository(connection, self.profile)
        self.task_logs = SqlTaskLogRepository(connection, self.profile)
        self.workers = SqlWorkerRepository(connection, self.profile)
        return self

    def commit(self) -> None:
        try:
            self.connection.commit()
        except DBAPIError as error:
            translated = translate(error, self.profile)
            if isinstance(translated, TransientStorageError):
                # The server may or may not have applied the commit before the link broke.
                translated.outcome_unknown = True
            raise translated from error
        self._committed = True

    def rollback(self) -> None:
        self.connection.rollback()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        connection, self._connection = self._connection, None
        try:
            if connection is not None:
                try:
                    # Statements after commit() opened a new transaction: roll it back too.
                    active = connection.in_transaction()
                    if not self._committed or active:
                        connection.rollback()
                    # The pool may skip its own rollback only if ours or the commit surely
                    # ended the transaction: not after a failed COMMIT, which leaves an
                    # inactive transaction that rollback() does not send to the server.
                    ended = active or self._committed
                    if ended and not (connection.closed or connection.invalidated):
                        connection.info[TRANSACTION_ENDED] = True
                finally:
                    connection.close()
        except DBAPIError as error:
            if exc is None:
                raise translate(error, self.profile) from error
            # The original failure matters more than a failed rollback on a broken link.
        finally:
            self._guard.__exit__(None, None, None)
        if isinstance(exc, DBAPIError):
            raise translate(exc, self.profile) from exc
        if isinstance(exc, PoolTimeoutError):
            raise pool_exhausted() from exc


def pool_exhausted() -> TransientStorageError:
    """Every pooled connection stayed busy for the pool timeout (30 s). Nothing was sent, so
    the caller may retry; Storage.run does not, as it has already waited that long."""
    return TransientStorageError(
        "no free database connection within the pool timeout (raise max_open?)"
    )
