"""Helpers of the command-line tests: a runner that keeps stdout and stderr apart, and a
small queue in a database of each persistent kind."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from click.testing import CliRunner, Result
from sqlalchemy import URL

from asynctaskmanager import ExecutorType, RetryStrategy, Storage, TaskConfig, Worker, open_storage
from asynctaskmanager.cli import cli

Run = Callable[..., Result]


def url_text(url: URL) -> str:
    return url.render_as_string(hide_password=False)


@pytest.fixture
def run() -> Run:
    def invoke(*args: str, input: str | None = None) -> Result:
        # A wide terminal, so that tables show whole values.
        runner = CliRunner(env={"COLUMNS": "200"})
        return runner.invoke(cli, list(args), input=input, catch_exceptions=False)

    return invoke


def assert_short_failure(result: Result, *expected: str) -> None:
    """A failure as a user sees it: status 1, at most three lines, no traceback, the words."""
    assert result.exit_code == 1, result.output
    lines = result.stderr.strip().splitlines()
    assert 1 <= len(lines) <= 3, result.stderr
    assert "Traceback" not in result.output
    assert all(line.startswith("asynctaskmanager: ") for line in lines), lines
    for words in expected:
        assert words in result.stderr, result.stderr


@pytest.fixture
def queue_url(database_url: URL) -> Iterator[URL]:
    """A migrated database of each persistent kind with a little queue in it: email tasks
    (3 pending, 1 running on worker-a, 1 completed) and one failed sms task."""
    with open_storage(database_url, upgrade=True) as storage:
        fill_queue(storage)
    yield database_url


def fill_queue(storage: Storage) -> None:
    for task_type in ("email", "sms"):
        storage.task_configs.create(
            TaskConfig(
                task_type,
                task_type,
                ExecutorType.HTTP,
                retry_strategy=RetryStrategy.FIXED,
                retry_delay=0,
            )
        )
    storage.queue.register_worker(Worker("worker-a", "a", "10.0.0.1:9000"))
    storage.queue.register_worker(Worker("worker-b", "b", "10.0.0.2:9000", supported_types=["sms"]))
    for number in range(5):
        storage.queue.enqueue("email", {"n": number})
    [done] = storage.queue.claim("worker-a")
    storage.queue.complete(done, {"sent": True})
    storage.queue.claim("worker-a")
    storage.queue.enqueue("sms", {"to": "[red]markup[/red]"}, task_id="sms-1", max_retry=0)
    [sms] = storage.queue.claim("worker-b")
    storage.queue.fail(sms, "gateway said [Errno 111] no")
