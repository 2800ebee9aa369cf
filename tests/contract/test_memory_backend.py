"""The memory backend: one SQLite database in memory, safe under many threads."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest

from asynctaskmanager import (
    LogType,
    Storage,
    StorageError,
    Task,
    TaskFilter,
    TaskLog,
    Worker,
    open_storage,
)
from asynctaskmanager.infrastructure import migrations

THREADS = 8
CREATES_PER_THREAD = 200
UNITS_PER_THREAD = 25


class Boom(Exception):
    pass


def run_threads(count: int, target: Callable[[int], None], timeout: float = 60.0) -> None:
    """Start ``count`` threads at the same moment and re-raise the first failure."""
    barrier = threading.Barrier(count)
    errors: list[BaseException] = []

    def body(index: int) -> None:
        try:
            barrier.wait()
            target(index)
        except BaseException as error:  # collected and re-raised in the test's thread
            errors.append(error)

    threads = [threading.Thread(target=body, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout)
    assert not any(thread.is_alive() for thread in threads), "a thread hung"
    if errors:
        raise errors[0]


def test_memory_is_migrated_to_head(memory_storage: Storage) -> None:
    assert memory_storage.backend == "memory"
    assert memory_storage.schema_revision() == migrations.head_revision()


def test_many_threads_write_at_once_without_loss(memory_storage: Storage) -> None:
    storage = memory_storage

    def work(index: int) -> None:
        for i in range(CREATES_PER_THREAD):
            storage.tasks.create(Task(f"type-{index}", {"i": i}, task_id=f"t{index}-{i}"))
            if i % 50 == 0:
                # Reads interleave with other threads' writes.
                assert storage.tasks.find(f"t{index}-{i}") is not None
        storage.workers.create(Worker(f"w{index}", "worker", "h:1"))
        for u in range(UNITS_PER_THREAD):
            task_id = f"u{index}-{u}"
            if u % 5 == 4:
                # Every fifth unit fails half-way; none of it may stay.
                with pytest.raises(Boom), storage.unit_of_work() as uow:
                    uow.tasks.create(Task("uow", task_id=task_id))
                    uow.task_logs.create(TaskLog(task_id, LogType.CREATED))
                    raise Boom
                continue
            with storage.unit_of_work() as uow:
                uow.tasks.create(Task("uow", task_id=task_id))
                uow.task_logs.create(TaskLog(task_id, LogType.CREATED, log_id=f"l{index}-{u}"))
                worker = uow.workers.get(f"w{index}")
                uow.workers.update(Worker(worker.worker_id, "worker", "h:1", current_load=u + 1))
                uow.commit()

    run_threads(THREADS, work)

    committed_units = UNITS_PER_THREAD - UNITS_PER_THREAD // 5
    assert storage.tasks.count() == THREADS * (CREATES_PER_THREAD + committed_units)
    for index in range(THREADS):
        assert storage.tasks.count(TaskFilter(task_type=f"type-{index}")) == CREATES_PER_THREAD
        listed = storage.tasks.list(TaskFilter(task_type=f"type-{index}"), limit=1000)
        assert {t.task_id for t in listed} == {f"t{index}-{i}" for i in range(CREATES_PER_THREAD)}
        assert {t.payload["i"] for t in listed} == set(range(CREATES_PER_THREAD))
        # The last committed unit left its load; failed units left nothing.
        last_committed = max(u for u in range(UNITS_PER_THREAD) if u % 5 != 4)
        assert storage.workers.get(f"w{index}").current_load == last_committed + 1
        for u in range(UNITS_PER_THREAD):
            expected = 0 if u % 5 == 4 else 1
            assert storage.task_logs.count_for_task(f"u{index}-{u}") == expected
    assert storage.tasks.count(TaskFilter(task_type="uow")) == THREADS * committed_units


def test_another_thread_never_sees_uncommitted_rows(memory_storage: Storage) -> None:
    storage = memory_storage
    written = threading.Event()
    seen: list[Task | None] = []

    def reader() -> None:
        written.wait(10)
        seen.append(storage.tasks.find("dirty"))  # waits for the writer's unit to end

    thread = threading.Thread(target=reader)
    thread.start()
    with storage.unit_of_work() as uow:
        uow.tasks.create(Task("t", task_id="dirty"))
        written.set()
        time.sleep(0.2)  # give the reader every chance to look inside
        # leave without commit
    thread.join(10)
    assert not thread.is_alive()
    assert seen == [None]
    assert storage.tasks.count() == 0


def test_two_memory_storages_are_independent() -> None:
    first = open_storage("memory")
    second = open_storage("memory")
    try:
        first.tasks.create(Task("t", task_id="only-in-first"))
        second.workers.create(Worker("only-in-second", "n", "h"))
        assert first.tasks.count() == 1 and second.tasks.count() == 0
        assert second.tasks.find("only-in-first") is None
        assert first.workers.find("only-in-second") is None
        # The same id in both is no conflict.
        second.tasks.create(Task("t", task_id="only-in-first"))
        first.close()
        assert second.tasks.count() == 1
        assert second.workers.get("only-in-second").worker_name == "n"
    finally:
        first.close()
        second.close()
    # A fresh one starts empty.
    third = open_storage("memory")
    try:
        assert third.tasks.count() == 0 and third.workers.count() == 0
    finally:
        third.close()


@pytest.mark.parametrize("backend", ["memory", "sqlite"])
def test_nested_unit_of_work_raises_a_clear_error(
    backend: str, request: pytest.FixtureRequest
) -> None:
    """SQLite has one writer: a nested unit in the same thread would wait for itself."""
    storage: Storage = request.getfixturevalue(f"{backend}_storage")
    with storage.unit_of_work() as outer:
        outer.tasks.create(Task("t", task_id="outer"))
        with (
            pytest.raises(StorageError, match="cannot open inside another"),
            storage.unit_of_work(),
        ):
            pass
        # Auto-committing repository calls open a unit too: refused, not deadlocked.
        with pytest.raises(StorageError, match="cannot open inside another"):
            storage.tasks.create(Task("t", task_id="inner"))
        # The outer unit is intact and still commits.
        assert outer.tasks.find("outer") is not None
        outer.commit()
    assert storage.tasks.find("outer") is not None
    assert storage.tasks.find("inner") is None

    # The lock was released: other threads and later units get in.
    done: list[int] = []
    thread = threading.Thread(target=lambda: done.append(storage.tasks.count()))
    thread.start()
    thread.join(10)
    assert done == [1]
    with storage.unit_of_work() as again:
        again.tasks.create(Task("t", task_id="after"))
        again.commit()
    assert storage.tasks.count() == 2
