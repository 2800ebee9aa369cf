"""The unit of work: one transaction that several repositories share."""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from types import TracebackType
from typing import Any

from sqlalchemy import Connection, Engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.orm import Session

from asynctaskmanager.domain.repositories import (
    TaskConfigRepository,
    TaskLogRepository,
    TaskRepository,
    WorkerRepository,
)
from asynctaskmanager.errors import StorageError, TransientStorageError
from asynctaskmanager.infrastructure.dialects import READ_ONLY, ClusterInfo, DialectProfile
from asynctaskmanager.infrastructure.dialects.profile import SYNC_WAIT_SET
from asynctaskmanager.infrastructure.engine import TRANSACTION_ENDED
from asynctaskmanager.infrastructure.errors import pool_exhausted, translate
from asynctaskmanager.infrastructure.repositories import (
    SqlTaskConfigRepository,
    SqlTaskLogRepository,
    SqlTaskRepository,
    SqlWorkerRepository,
)


class UnitOfWork:
    """``with storage.unit_of_work() as uow: ...; uow.commit()``.

    Leaving the block without :meth:`commit` rolls everything back. Repositories never
    commit on their own.

    ``read_only=True`` promises that the block only reads. On SQLite its transaction then
    begins deferred: it reads one snapshot and neither waits for a writer nor holds one
    up (a write in it may fail with :class:`TransientStorageError` while another writer is
    busy). On MySQL it is an ordinary READ COMMITTED transaction (each statement sees the latest
    commits; InnoDB needs no hint for plain SELECTs), so only SQLite promises one snapshot.

    ``sync_wait=True``: on a cluster, the reads wait until this node has applied every commit
    the cluster made before them (``wsrep_sync_wait``), for reads that must see what another
    node just wrote; elsewhere it changes nothing.
    """

    tasks: TaskRepository
    task_configs: TaskConfigRepository
    task_logs: TaskLogRepository
    workers: WorkerRepository

    def __init__(
        self,
        engine: Engine,
        profile: DialectProfile,
        guard: AbstractContextManager[Any] | None,
        *,
        read_only: bool = False,
        sync_wait: bool = False,
    ) -> None:
        self._engine = engine
        self.read_only = read_only
        self.sync_wait = sync_wait
        self.profile = profile
        self._guard: AbstractContextManager[Any] = guard if guard is not None else nullcontext()
        self._connection: Connection | None = None
        self._session: Session | None = None
        self._committed = False

    @property
    def connection(self) -> Connection:
        """The transaction's Core connection, for statements of your own."""
        if self._connection is None:
            raise StorageError("the unit of work is not open; use it in a with block")
        return self._connection

    @property
    def cluster(self) -> ClusterInfo:
        """Whether the database is one node of a cluster (known once connected)."""
        return self.profile.cluster(self._engine)

    @property
    def session(self) -> Session:
        """An ORM :class:`~sqlalchemy.orm.Session` in this unit of work's transaction, made on
        first use: what it writes commits or rolls back with the repositories' statements.

        :meth:`commit` flushes it first. The repositories write through Core, so ORM objects
        loaded before a repository changed their rows are stale until refreshed.
        """
        if self._session is None:
            connection = self.connection
            if not connection.in_transaction():
                connection.begin()
            # rollback_only: the unit of work commits; a Session rollback rolls back all.
            self._session = Session(bind=connection, join_transaction_mode="rollback_only")
        return self._session

    def __enter__(self) -> UnitOfWork:
        self._guard.__enter__()
        try:
            # A Core connection, not an ORM Session: the repositories issue Core statements
            # only, and a Session's bookkeeping was about half of a short transaction's CPU.
            connection = self._engine.connect()
            # Read by the dialect when the transaction begins (SQLite: deferred or
            # immediate); kept per checkout, so set on every one.
            connection.info[READ_ONLY] = self.read_only
            if self.sync_wait and self.profile.sync_wait and self.cluster.is_cluster:
                connection.info[SYNC_WAIT_SET] = True
                connection.exec_driver_sql(self.profile.sync_wait[0])
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
        if self._session is not None:
            # A failed flush is an ordinary failure (translated on leaving the block), not a
            # COMMIT of unknown outcome.
            self._session.flush()
        try:
            self.connection.commit()
        except DBAPIError as error:
            translated = translate(error, self.profile)
            if isinstance(translated, TransientStorageError) and not (
                self.profile.classify(error).rolled_back
            ):
                # The server may or may not have applied the commit before the link broke;
                # a deadlock or certification conflict is a known rollback instead.
                translated.outcome_unknown = True
            raise translated from error
        self._committed = True

    def rollback(self) -> None:
        if self._session is not None:
            self._session.expunge_all()
        self.connection.rollback()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        connection, self._connection = self._connection, None
        session, self._session = self._session, None
        if session is not None:
            session.close()
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
                    if not (connection.closed or connection.invalidated):
                        connection.info.pop(READ_ONLY, None)  # not for the next checkout
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
