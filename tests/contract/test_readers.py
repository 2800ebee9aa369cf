"""Reads neither wait for a writer nor hold one up (SQLite: deferred BEGIN under WAL)."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable
from typing import Any

from asynctaskmanager import ExecutorType, Storage, TaskConfig, TaskRequest

# Far below the 30 s busy timeout that a reader waiting on the write lock would sit out.
PATIENCE_SECONDS = 10.0


def _in_thread(action: Callable[[], Any]) -> Any:
    """``action()`` in another thread (the same-thread guard refuses nesting); its result."""
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["value"] = action()
        except BaseException as error:  # handed to the test thread
            outcome["error"] = error

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(PATIENCE_SECONDS)
    assert not thread.is_alive(), f"still waiting after {PATIENCE_SECONDS} s"
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def _seed(storage: Storage) -> str:
    storage.task_configs.create(TaskConfig("reader.kind", "r", ExecutorType.FUNCTION))
    return storage.queue.enqueue("reader.kind", {"n": 1}).task_id


def test_reads_do_not_wait_for_an_open_writer(persistent_storage: Storage) -> None:
    task_id = _seed(persistent_storage)
    with persistent_storage.unit_of_work() as writer:
        writer.task_configs.create(TaskConfig("reader.uncommitted", "u", ExecutorType.FUNCTION))
        writer.tasks.get(task_id)  # the writer holds its lock from here on

        task = _in_thread(lambda: persistent_storage.tasks.get(task_id))
        kinds = _in_thread(
            lambda: [config.task_type for config in persistent_storage.task_configs.list()]
        )
        counted = _in_thread(persistent_storage.tasks.count)
    assert task.task_id == task_id
    assert kinds == ["reader.kind"]  # the writer's row is not visible before its commit
    assert counted == 1


def test_an_open_read_only_unit_of_work_does_not_hold_up_a_writer(
    persistent_storage: Storage,
) -> None:
    _seed(persistent_storage)
    with persistent_storage.unit_of_work(read_only=True) as reader:
        assert reader.tasks.count() == 1  # the reader's transaction is open from here on

        enqueued = _in_thread(
            lambda: persistent_storage.queue.enqueue_many(
                [TaskRequest("reader.kind", {"n": 2}), TaskRequest("reader.kind", {"n": 3})]
            )
        )
    assert len(enqueued) == 2
    assert persistent_storage.tasks.count() == 3


def test_a_read_only_unit_of_work_on_sqlite_reads_one_snapshot(sqlite_storage: Storage) -> None:
    _seed(sqlite_storage)
    with sqlite_storage.unit_of_work(read_only=True) as reader:
        before = reader.tasks.count()
        _in_thread(lambda: sqlite_storage.queue.enqueue("reader.kind", {"n": 2}))
        during = reader.tasks.count()
    assert (before, during) == (1, 1)
    assert sqlite_storage.tasks.count() == 2


def _write_lock_is_free(storage: Storage) -> bool:
    """Whether another connection could take SQLite's write lock right now (no waiting)."""
    other = sqlite3.connect(str(storage.engine.url.database), timeout=0, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")
    except sqlite3.OperationalError as error:
        assert "locked" in str(error)
        return False
    else:
        other.execute("ROLLBACK")
        return True
    finally:
        other.close()


def test_on_sqlite_a_reader_leaves_the_write_lock_free_and_a_writer_takes_it_at_once(
    sqlite_storage: Storage,
) -> None:
    _seed(sqlite_storage)
    for _ in range(2):  # the second round reuses the pooled connection the first one used
        with sqlite_storage.unit_of_work(read_only=True) as reader:
            assert reader.tasks.count() == 1
            assert _write_lock_is_free(sqlite_storage)
        with sqlite_storage.unit_of_work() as writer:
            assert writer.tasks.count() == 1  # a read, yet the transaction is a writer's
            assert not _write_lock_is_free(sqlite_storage)
        assert _write_lock_is_free(sqlite_storage)
