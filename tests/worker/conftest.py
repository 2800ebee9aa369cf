"""Storages with a fast heartbeat (a worker is dead after 2 s of silence), on every backend."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import URL

from asynctaskmanager import ExecutorType, QueueSettings, Storage, TaskConfig, open_storage
from asynctaskmanager.worker import RunSummary, WorkerRuntime
from tests.conftest import BACKENDS, SERVER_BACKENDS, empty_tables

FAST = QueueSettings(heartbeat_interval=timedelta(seconds=1), missed_heartbeats=2)


def open_fast(url: URL | str) -> Storage:
    return open_storage(url, queue_settings=FAST)


@pytest.fixture(params=BACKENDS)
def worker_storage(request: pytest.FixtureRequest) -> Iterator[Storage]:
    if request.param == "memory":
        storage = open_fast("memory")
    elif request.param == "sqlite":
        storage = open_storage(
            request.getfixturevalue("sqlite_url"), upgrade=True, queue_settings=FAST
        )
    else:
        storage = open_fast(request.getfixturevalue("mysql_database_url"))
        empty_tables(storage)
    try:
        yield storage
    finally:
        storage.close()


@pytest.fixture(params=SERVER_BACKENDS)
def shared_url(request: pytest.FixtureRequest) -> Iterator[URL]:
    """A migrated, empty database that several processes can open."""
    if request.param == "sqlite":
        url: URL = request.getfixturevalue("sqlite_url")
        open_storage(url, upgrade=True).close()
        yield url
        return
    url = request.getfixturevalue("mysql_database_url")
    with open_storage(url) as storage:
        empty_tables(storage)
    yield url


def configure(storage: Storage, task_type: str, **options: Any) -> None:
    options.setdefault("retry_delay", 0)
    storage.task_configs.create(TaskConfig(task_type, task_type, ExecutorType.FUNCTION, **options))


class Running:
    """A runtime run on a thread of its own; ``join`` returns its summary."""

    def __init__(self, runtime: WorkerRuntime) -> None:
        self.runtime = runtime
        self.summary: RunSummary | None = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self.summary = self.runtime.run(handle_signals=False)
        except BaseException as error:
            self.error = error

    def join(self, timeout: float) -> RunSummary:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), f"the worker did not stop within {timeout}s"
        if self.error is not None:
            raise self.error
        assert self.summary is not None
        return self.summary


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    import time

    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)
