"""PyMySQL (``mysql+pymysql://``) works as well as mysqlclient: the same session settings,
the same queue, the same error translation."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import URL, text

from asynctaskmanager import (
    DuplicateError,
    ExecutorType,
    Storage,
    TaskConfig,
    TaskStatus,
    Worker,
    open_storage,
)
from tests.conftest import empty_tables

pytestmark = pytest.mark.mysql


@pytest.fixture
def pymysql_storage(mysql_database_url: URL) -> Iterator[Storage]:
    pytest.importorskip("pymysql")
    storage = open_storage(mysql_database_url.set(drivername="mysql+pymysql"))
    empty_tables(storage)
    try:
        yield storage
    finally:
        storage.close()


def test_pymysql_runs_the_queue(pymysql_storage: Storage) -> None:
    storage = pymysql_storage
    assert storage.engine.dialect.driver == "pymysql"
    with storage.engine.connect() as connection:
        zone = connection.execute(text("SELECT @@session.time_zone")).scalar_one()
    assert zone == "+00:00"
    storage.task_configs.create(TaskConfig("email", "Email", ExecutorType.HTTP))
    storage.queue.register_worker(Worker("w1", "w1", "10.0.0.1:1"))
    task = storage.queue.enqueue("email", {"to": "ü@example.com"}, task_id="t-1")
    [claimed] = storage.queue.claim("w1")
    assert claimed.task_id == task.task_id
    assert storage.queue.complete(claimed, {"ok": True})
    done = storage.tasks.get("t-1")
    assert done.status is TaskStatus.COMPLETED and done.payload == {"to": "ü@example.com"}
    with pytest.raises(DuplicateError):
        storage.task_configs.create(TaskConfig("email", "Email", ExecutorType.HTTP))
