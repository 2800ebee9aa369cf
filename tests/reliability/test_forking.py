"""A Storage opened before fork works in the child, on connections of the child's own, and
the parent's connections survive the child."""

from __future__ import annotations

import gc
import multiprocessing
from multiprocessing.connection import Connection as Pipe

import pytest
from sqlalchemy import text

from asynctaskmanager import ExecutorType, Storage, TaskConfig


def _session_id(storage: Storage) -> object:
    """The server's id of the pooled connection (MySQL), or the SQLite handle's identity."""
    with storage.engine.connect() as connection:
        if storage.backend == "mysql":
            return connection.execute(text("SELECT CONNECTION_ID()")).scalar_one()
        if storage.backend == "postgresql":
            return connection.execute(text("SELECT pg_backend_pid()")).scalar_one()
        return id(connection.connection.dbapi_connection)


def _use_in_child(storage: Storage, pipe: Pipe) -> None:
    # Free what the child dropped of its parent's pool now, as its garbage collector would
    # at some point: a driver connection closed from here must not end the parent's session.
    gc.collect()
    try:
        storage.task_configs.create(TaskConfig("from-child", "Child", ExecutorType.HTTP))
        pipe.send((_session_id(storage), storage.task_configs.count()))
    except BaseException as error:
        pipe.send(error)
        raise


@pytest.mark.concurrency
def test_storage_survives_fork(persistent_storage: Storage) -> None:
    storage = persistent_storage
    storage.task_configs.create(TaskConfig("from-parent", "Parent", ExecutorType.HTTP))
    parent_session = _session_id(storage)

    context = multiprocessing.get_context("fork")
    receiver, sender = context.Pipe(duplex=False)
    child = context.Process(target=_use_in_child, args=(storage, sender))
    child.start()
    assert receiver.poll(60), "the child neither answered nor failed within a minute"
    answer = receiver.recv()
    child.join(30)
    assert not isinstance(answer, BaseException), answer
    child_session, child_count = answer
    assert child.exitcode == 0
    assert child_count == 2
    if storage.backend in ("mysql", "postgresql"):
        # The child opened its own session instead of writing on the parent's socket.
        assert child_session != parent_session

    # The parent's pooled connection was neither closed nor disturbed by the child.
    assert _session_id(storage) == parent_session
    assert {config.task_type for config in storage.task_configs.list()} == {
        "from-parent",
        "from-child",
    }
