"""``python -m asynctaskmanager.worker`` in processes of its own: SIGKILL and rescue by
another worker's sweep, SIGTERM (graceful) and a second SIGTERM (at once); and --app errors."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import URL

from asynctaskmanager import ConfigurationError, LogType, TaskRequest, TaskStatus, open_storage
from asynctaskmanager.worker import WorkerRuntime, load_handlers, main
from tests.worker.conftest import Running, configure, open_fast, wait_until

ROOT = Path(__file__).resolve().parents[2]
APP = "tests.worker.handlers:HANDLERS"


def start_worker(url: URL, *options: str) -> subprocess.Popen[str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "asynctaskmanager.worker",
            "--app",
            APP,
            "--url",
            url.render_as_string(hide_password=False),
            *options,
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def test_sigkill_and_rescue_by_another_workers_sweep(shared_url: URL) -> None:
    with open_fast(shared_url) as storage:
        configure(storage, "work.sleep")
        tasks = storage.queue.enqueue_many(
            [TaskRequest("work.sleep", {"seconds": 60}) for _ in range(2)]
        )
        victim = start_worker(shared_url, "--concurrency", "2")
        try:
            wait_until(
                lambda: (
                    storage.tasks.count() == 2
                    and all(storage.tasks.get(t.task_id).worker_id for t in tasks)
                ),
                30,
                "the worker process to claim both tasks",
            )
        finally:
            victim.kill()
            victim.wait(10)
        dead = storage.tasks.get(tasks[0].task_id).worker_id
        rescuer = WorkerRuntime(
            storage,
            {"work.sleep": lambda task: "rescued"},
            sweep_interval=timedelta(milliseconds=500),
            poll_interval=0.01,
        )
        running = Running(rescuer)
        wait_until(
            lambda: all(storage.tasks.get(t.task_id).status is TaskStatus.COMPLETED for t in tasks),
            20,
            "the rescue",
        )
        rescuer.stop()
        summary = running.join(10)
        assert summary.completed == 2
        for task in tasks:
            done = storage.tasks.get(task.task_id)
            assert (done.result, done.retry_count) == ("rescued", 1)
            kinds = [log.log_type for log in storage.task_logs.list_for_task(task.task_id)]
            assert kinds.count(LogType.RESCUED) == 1
            assert kinds.count(LogType.COMPLETED) == 1
        assert dead is not None
        assert storage.workers.get(dead).status.value == "offline"


def test_sigterm_drains_and_a_second_sigterm_stops_at_once(shared_url: URL) -> None:
    with open_fast(shared_url) as storage:
        configure(storage, "work.sleep")
        quick = storage.queue.enqueue("work.sleep", {"seconds": 0.5})
        slow = storage.queue.enqueue("work.sleep", {"seconds": 60})
        worker = start_worker(shared_url, "--concurrency", "2", "--shutdown-timeout", "2")

        def both_running() -> bool:
            return all(
                storage.tasks.get(t.task_id).status is TaskStatus.RUNNING for t in (quick, slow)
            )

        wait_until(both_running, 30, "the worker process to start both tasks")
        worker.send_signal(signal.SIGTERM)
        output, _ = worker.communicate(timeout=15)
        assert worker.returncode == 1, output  # a task had to be handed back
        assert storage.tasks.get(quick.task_id).status is TaskStatus.COMPLETED, output
        handed_back = storage.tasks.get(slow.task_id)
        assert (handed_back.status, handed_back.error_message) == (
            TaskStatus.PENDING,
            "worker deregistered",
        ), output
        assert "handed back" in output

        # Again, with a second signal before the deadline: it stops at once, holding the task.
        worker = start_worker(shared_url, "--shutdown-timeout", "30")
        wait_until(
            lambda: storage.tasks.get(slow.task_id).status is TaskStatus.RUNNING,
            30,
            "the claim",
        )
        worker.send_signal(signal.SIGTERM)
        wait_until(lambda: "second signal" in _peek(worker), 10, "the first signal to land")
        worker.send_signal(signal.SIGTERM)
        output, _ = worker.communicate(timeout=10)
        assert worker.returncode == 1, output
        assert storage.tasks.get(slow.task_id).status is TaskStatus.RUNNING, output
        assert "stopped at once" in output


_seen: dict[int, str] = {}


def _peek(process: subprocess.Popen[str]) -> str:
    """What the process logged so far (reads lines as they come; the log is small)."""
    assert process.stdout is not None
    os.set_blocking(process.stdout.fileno(), False)
    chunk = process.stdout.read() or ""
    _seen[process.pid] = _seen.get(process.pid, "") + chunk
    return _seen[process.pid]


@pytest.mark.parametrize(
    ("app", "message"),
    [
        ("no_colon", "must look like"),
        ("a:b:c", "must look like"),
        (":HANDLERS", "must look like"),
        ("tests.worker.nonexistent:HANDLERS", "no module named 'tests.worker.nonexistent'"),
        ("tests.worker.handlers:MISSING", "has no attribute 'MISSING'"),
        ("tests.worker.handlers:NOT_A_MAPPING", "non-empty mapping"),
        ("tests.worker.handlers:HANDLERS.nope", "has no attribute"),
    ],
)
def test_load_handlers_says_what_is_wrong(app: str, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message.replace(".", r"\.")):
        load_handlers(app)


def test_load_handlers_and_main_on_a_bad_app(capsys: pytest.CaptureFixture[str]) -> None:
    assert set(load_handlers(APP)) == {"work.echo", "work.sleep", "work.boom"}
    assert main(["--app", "tests.worker.handlers:MISSING", "--url", "memory"]) == 2
    assert "has no attribute 'MISSING'" in capsys.readouterr().err


def test_main_runs_a_burst(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/burst.db"
    with open_storage(url, upgrade=True) as storage:
        configure(storage, "work.echo")
        task = storage.queue.enqueue("work.echo", [1, 2])
    assert main(["--app", APP, "--url", url, "--burst", "--log-level", "WARNING"]) == 0
    with open_storage(url) as storage:
        assert storage.tasks.get(task.task_id).result == {"echo": [1, 2]}
