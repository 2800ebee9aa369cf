"""Pooled connections go back clean, at no round trip after a unit of work that ended."""

from __future__ import annotations

import pytest
from sqlalchemy import URL, text

from asynctaskmanager import (
    AsyncTaskManagerError,
    ExecutorType,
    Storage,
    TaskConfig,
    TransactionRetry,
    TransientStorageError,
)
from asynctaskmanager.infrastructure.engine import connect
from tests.conftest import mysql_only


def _config(task_type: str) -> TaskConfig:
    return TaskConfig(task_type, task_type, ExecutorType.FUNCTION)


def test_open_transaction_outside_a_unit_of_work_is_rolled_back_on_return(
    persistent_storage: Storage,
) -> None:
    raw = persistent_storage.engine.raw_connection()
    try:
        cursor = raw.cursor()
        cursor.execute("BEGIN")
        cursor.execute(
            "INSERT INTO task_log (log_id, task_id, log_type) VALUES ('leaked', 'x', 'info')"
        )
        cursor.close()
    finally:
        raw.close()  # back to the pool with the insert uncommitted

    persistent_storage.task_configs.create(_config("kept"))  # commits on a pooled connection

    assert persistent_storage.task_logs.find("leaked") is None
    assert persistent_storage.task_configs.find("kept") is not None


def _session_rollbacks(storage: Storage, *, commit: bool) -> tuple[int, int]:
    with storage.unit_of_work() as uow:
        connection_id = uow.connection.execute(text("SELECT CONNECTION_ID()")).scalar_one()
        rollbacks = uow.connection.execute(text("SHOW SESSION STATUS LIKE 'Com_rollback'")).one()[1]
        if commit:
            uow.commit()
    return int(connection_id), int(rollbacks)


@mysql_only
def test_a_committed_unit_of_work_returns_its_connection_without_a_rollback(
    mysql_storage: Storage,
) -> None:
    first, before = _session_rollbacks(mysql_storage, commit=True)
    second, after_commit = _session_rollbacks(mysql_storage, commit=False)
    third, after_rollback = _session_rollbacks(mysql_storage, commit=True)

    assert first == second == third  # one pooled connection throughout
    assert after_commit == before  # no reset rollback after the commit
    assert after_rollback == after_commit + 1  # the uncommitted one was rolled back, once


def test_a_failed_commit_does_not_leave_its_transaction_in_the_pool(
    sqlite_storage: Storage,
) -> None:
    # A deferred foreign key fails at COMMIT and leaves SQLite's transaction open: the pool
    # must still roll it back, or the next unit of work cannot begin.
    with sqlite_storage.engine.begin() as connection:
        connection.exec_driver_sql("CREATE TABLE parent (id INTEGER PRIMARY KEY)")
        connection.exec_driver_sql(
            "CREATE TABLE child (id INTEGER PRIMARY KEY, parent_id INTEGER"
            " REFERENCES parent (id) DEFERRABLE INITIALLY DEFERRED)"
        )
    with pytest.raises(AsyncTaskManagerError), sqlite_storage.unit_of_work() as uow:
        uow.connection.exec_driver_sql("INSERT INTO child VALUES (1, 99)")
        uow.commit()

    sqlite_storage.task_configs.create(_config("after"))

    assert sqlite_storage.task_configs.find("after") is not None
    with sqlite_storage.engine.connect() as connection:
        assert connection.exec_driver_sql("SELECT count(*) FROM child").scalar_one() == 0


class _CountingRetry(TransactionRetry):
    def __init__(self) -> None:
        super().__init__(attempts=6, base_delay=0.0, max_delay=0.0)
        self.pauses = 0

    def pause(self, attempt: int) -> None:
        self.pauses += 1


def test_an_exhausted_pool_gives_one_transient_error_without_retries(
    database_url: URL,
) -> None:
    database = connect(database_url, pool_size=1, max_overflow=0, pool_timeout=0.2)
    retry = _CountingRetry()
    storage = Storage(database, retry=retry)
    try:
        # The pool's only connection, held.
        with database.engine.connect(), pytest.raises(TransientStorageError) as raised:
            storage.tasks.count()
        assert "pool timeout" in str(raised.value)
        assert not raised.value.outcome_unknown
        assert retry.pauses == 0  # it already waited the pool timeout: no rerun
    finally:
        storage.close()
