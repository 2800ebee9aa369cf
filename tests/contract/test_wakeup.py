"""Waiting for work: LISTEN/NOTIFY on PostgreSQL, polling with backoff on the other backends.

The same contract everywhere: a waiter made before a claim misses no enqueue that commits
after it; an enqueue that rolls back wakes nobody; a waiter for some types sleeps through
the others; an idle wait returns False at its timeout.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import replace

import pytest
from sqlalchemy import URL

from asynctaskmanager import (
    DuplicateError,
    ExecutorType,
    Storage,
    TaskConfig,
    TaskRequest,
    ValidationError,
    Worker,
    open_storage,
)
from asynctaskmanager.infrastructure.engine import Database
from asynctaskmanager.queue import wakeup
from tests.conftest import empty_tables
from tests.support.faults import ConnectionKiller


@pytest.fixture
def ready(storage: Storage) -> Storage:
    for task_type in ("a", "b"):
        storage.task_configs.create(TaskConfig(task_type, task_type, ExecutorType.FUNCTION))
    storage.queue.register_worker(Worker("w1", "worker", "h:1"))
    return storage


def enqueue_later(storage: Storage, task_type: str, delay: float) -> threading.Thread:
    def enqueue() -> None:
        time.sleep(delay)
        storage.queue.enqueue(task_type)

    thread = threading.Thread(target=enqueue, daemon=True)
    thread.start()
    return thread


def test_an_enqueue_wakes_a_waiting_worker(ready: Storage) -> None:
    waiter = ready.queue.work_waiter()
    assert ready.queue.claim("w1") == []
    thread = enqueue_later(ready, "a", 0.3)
    started = time.monotonic()
    assert waiter.wait(10) is True
    assert 0.25 <= time.monotonic() - started < 3  # woken by the enqueue, not the timeout
    thread.join()
    assert len(ready.queue.claim("w1")) == 1


def test_an_enqueue_between_two_waits_is_not_missed(ready: Storage) -> None:
    waiter = ready.queue.work_waiter()
    ready.queue.enqueue("a")
    assert len(ready.queue.claim("w1")) == 1
    ready.queue.enqueue("a")  # while the worker was busy with the first
    started = time.monotonic()
    assert waiter.wait(10) is True
    assert time.monotonic() - started < 1
    # Then it settles (on PostgreSQL the second notification may still wake it once).
    assert not (waiter.wait(0.3) and waiter.wait(0.3))


def test_an_idle_wait_ends_at_its_timeout(ready: Storage) -> None:
    waiter = ready.queue.work_waiter()
    started = time.monotonic()
    assert waiter.wait(0.4) is False
    assert 0.4 <= time.monotonic() - started < 2


def test_an_enqueue_that_rolls_back_wakes_nobody(ready: Storage) -> None:
    waiter = ready.queue.work_waiter()
    ready.queue.enqueue("a", task_id="taken")
    assert waiter.wait(5) is True
    with pytest.raises(DuplicateError):
        ready.queue.enqueue_many([TaskRequest("a"), TaskRequest("a", task_id="taken")])
    assert waiter.wait(0.5) is False


def test_a_waiter_for_some_types_sleeps_through_the_others(ready: Storage) -> None:
    waiter = ready.queue.work_waiter(["a"])
    ready.queue.enqueue("b")
    assert waiter.wait(0.5) is False
    ready.queue.enqueue("a")
    assert waiter.wait(5) is True


def test_bad_waits_are_validation_errors(ready: Storage) -> None:
    waiter = ready.queue.work_waiter()
    for bad in (-1, float("nan"), "1", True, 10**9):
        with pytest.raises(ValidationError) as info:
            waiter.wait(bad)  # type: ignore[arg-type]
        assert info.value.field == "timeout"
    with pytest.raises(ValidationError):
        ready.queue.work_waiter([" a"])
    with pytest.raises(ValidationError):
        ready.queue.work_waiter("a")


# --- PostgreSQL: the listener ------------------------------------------------------------------


@pytest.fixture
def polling_postgres(postgres_storage: Storage) -> Iterator[Storage]:
    """The same database without the work channel: PostgreSQL polled like the others."""
    profile = replace(postgres_storage.profile, work_channel=None)
    storage = Storage(Database(postgres_storage.engine, profile))
    try:
        yield storage
    finally:
        storage.queue.close()


@pytest.mark.postgres
def test_postgres_wakes_by_notification_not_by_polling(
    postgres_storage: Storage, polling_postgres: Storage, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With polls an hour apart, only a notification wakes a waiter before its timeout."""
    monkeypatch.setattr(wakeup, "POLL_FIRST_SECONDS", 3600.0)
    monkeypatch.setattr(wakeup, "POLL_MAX_SECONDS", 3600.0)
    postgres_storage.task_configs.create(TaskConfig("a", "a", ExecutorType.FUNCTION))
    waiters = {
        "listening": postgres_storage.queue.work_waiter(),
        "polling": polling_postgres.queue.work_waiter(),
    }
    woken: dict[str, tuple[bool, float]] = {}

    def wait(name: str) -> None:
        started = time.monotonic()
        woke = waiters[name].wait(1.5)
        woken[name] = (woke, time.monotonic() - started)

    threads = [threading.Thread(target=wait, args=(name,)) for name in waiters]
    for thread in threads:
        thread.start()
    enqueue_later(postgres_storage, "a", 0.2).join()
    for thread in threads:
        thread.join(10)
    assert woken["listening"][0] is True and woken["listening"][1] < 1.0
    # The poller sees the task only at its last look, when its timeout ends.
    assert woken["polling"][1] >= 1.5


@pytest.mark.postgres
def test_postgres_listener_survives_the_loss_of_its_connection(
    postgres_database_url: URL,
) -> None:
    storage = open_storage(postgres_database_url)
    empty_tables(storage)
    killer = ConnectionKiller(postgres_database_url)
    try:
        storage.task_configs.create(TaskConfig("a", "a", ExecutorType.FUNCTION))
        waiter = storage.queue.work_waiter()
        [listener] = [
            pid
            for pid in killer.connections_of(str(postgres_database_url.database))
            if _listens(killer, pid)
        ]
        assert killer.kill(listener)
        # What was notified while nobody listened is unknown: the waiter is woken.
        assert waiter.wait(10) is True
        deadline = time.monotonic() + 10
        while not _listening_again(killer, postgres_database_url, listener):
            assert time.monotonic() < deadline, "the listener did not come back"
            time.sleep(0.05)
        storage.queue.enqueue("a")
        assert waiter.wait(10) is True
    finally:
        killer.close()
        storage.close()


def _listens(killer: ConnectionKiller, pid: int) -> bool:
    with killer.engine.connect() as connection:
        query = connection.exec_driver_sql(
            "SELECT query FROM pg_stat_activity WHERE pid = %(pid)s", {"pid": pid}
        )
        return str(query.scalar()).startswith("LISTEN")


def _listening_again(killer: ConnectionKiller, url: URL, old: int) -> bool:
    return any(
        _listens(killer, pid) for pid in killer.connections_of(str(url.database)) if pid != old
    )
