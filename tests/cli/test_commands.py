"""Each command once, on an SQLite file and on MySQL/MariaDB: what it prints, its --json,
and what it changes."""

from __future__ import annotations

import json
import socket
import time
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import URL

from asynctaskmanager import (
    IllegalTransitionError,
    LogType,
    NotFoundError,
    Storage,
    TaskStatus,
    open_storage,
)
from asynctaskmanager.infrastructure import migrations
from tests.cli.conftest import Run, assert_short_failure, fill_queue, url_text


def _json(run: Run, *args: str) -> Any:
    result = run(*args, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_status(run: Run, queue_url: URL) -> None:
    url = url_text(queue_url)
    result = run("status", "--url", url)
    assert result.exit_code == 0, result.output
    assert "email" in result.stdout and "Running per worker: worker-a 1" in result.stdout
    assert "Workers: online 2, draining 0, offline 0" in result.stdout

    data = _json(run, "status", "--url", url, "--all")
    counts = {(row["status"], row["task_type"]): row["count"] for row in data["tasks"]}
    assert counts == {
        ("pending", "email"): 3,
        ("running", "email"): 1,
        ("completed", "email"): 1,
        ("failed", "sms"): 1,
    }
    assert data["running_by_worker"] == {"worker-a": 1}
    assert data["oldest_due_pending_age_seconds"] >= 0
    assert data["recent_events"]["failed"] == 1


def test_tasks_list_and_show(run: Run, queue_url: URL) -> None:
    url = url_text(queue_url)
    listed = _json(run, "tasks", "list", "--url", url, "--status", "failed")
    assert [task["task_id"] for task in listed] == ["sms-1"]
    everything = _json(run, "tasks", "list", "--url", url, "--type", "email", "--limit", "2")
    assert len(everything) == 2

    table = run("tasks", "list", "--url", url)
    assert table.exit_code == 0 and "6 task(s)" in table.stdout
    assert "[Errno 111]" in table.stdout  # user text is printed, not read as markup

    shown = run("tasks", "show", "sms-1", "--url", url)
    assert shown.exit_code == 0, shown.output
    assert "[red]markup[/red]" in shown.stdout
    for log_type in ("created", "claimed", "failed"):
        assert log_type in shown.stdout
    data = _json(run, "tasks", "show", "sms-1", "--url", url)
    assert [log["log_type"] for log in data["log"]] == ["created", "claimed", "failed"]
    assert data["task"]["status"] == "failed"

    assert_short_failure(run("tasks", "show", "nope", "--url", url), "'nope' not found")


def test_tasks_retry(run: Run, queue_url: URL) -> None:
    url = url_text(queue_url)
    result = run("tasks", "retry", "sms-1", "--url", url, "--reason", "gateway fixed")
    assert result.exit_code == 0, result.output
    assert "sms-1 is pending again" in result.stdout
    with open_storage(queue_url) as storage:
        task = storage.tasks.get("sms-1")
        assert task.status is TaskStatus.PENDING and task.retry_count == 0
        last = storage.task_logs.list_for_task("sms-1")[-1]
        assert last.log_type is LogType.RETRY_SCHEDULED
        assert last.message == "gateway fixed" and last.details == {"by": "operator"}
        assert [t.task_id for t in storage.queue.claim("worker-b")] == ["sms-1"]
    assert_short_failure(
        run("tasks", "retry", "sms-1", "--url", url), "running -> pending is not allowed"
    )


def test_tasks_cancel(run: Run, queue_url: URL) -> None:
    url = url_text(queue_url)
    with open_storage(queue_url) as storage:
        pending_id = next(t.task_id for t in storage.tasks.list() if t.status is TaskStatus.PENDING)
    result = run("tasks", "cancel", pending_id, "--url", url, "--reason", "not needed")
    assert result.exit_code == 0 and "is cancelled" in result.stdout
    assert_short_failure(run("tasks", "cancel", pending_id, "--url", url), "cancelled -> cancelled")


def test_workers_list(run: Run, queue_url: URL) -> None:
    url = url_text(queue_url)
    data = _json(run, "workers", "list", "--url", url)
    assert {(w["worker_id"], w["current_load"]) for w in data} == {
        ("worker-a", 1),
        ("worker-b", 0),
    }
    assert _json(run, "workers", "list", "--url", url, "--status", "offline") == []
    table = run("workers", "list", "--url", url)
    assert table.exit_code == 0 and "10.0.0.2:9000" in table.stdout


def test_doctor(run: Run, queue_url: URL) -> None:
    url = url_text(queue_url)
    result = run("doctor", "--url", url)
    assert result.exit_code == 0, result.output
    checks = {c["name"]: c for c in _json(run, "doctor", "--url", url)["checks"]}
    assert checks["schema revision"]["level"] == "ok"
    assert checks["claim index"]["level"] == "ok"
    if queue_url.get_backend_name() == "mysql":
        assert {"SKIP LOCKED", "session time zone", "sql_mode"} <= set(checks)
        assert checks["session time zone"]["detail"] == "+00:00"
    else:
        assert "sql_mode" not in checks


def test_doctor_fails_on_a_schema_behind(run: Run, queue_url: URL) -> None:
    url = url_text(queue_url)
    assert run("downgrade", "0003", "--url", url).exit_code == 0
    result = run("doctor", "--url", url)
    assert result.exit_code == 1
    assert "behind head" in result.stdout and "asynctaskmanager upgrade" in result.stdout


def test_prune_with_statuses(run: Run, queue_url: URL) -> None:
    url = url_text(queue_url)
    time.sleep(1.1)  # the cutoff is in whole seconds: the tasks must end before it
    kept = _json(run, "prune", "--url", url, "--days", "0", "--statuses", "completed")
    assert kept["tasks"] == 1
    with open_storage(queue_url) as storage:
        assert storage.tasks.find("sms-1") is not None  # failed: kept
    result = run("prune", "--url", url, "--days", "0")
    assert result.exit_code == 0 and "pruned 1 tasks" in result.stdout
    assert_short_failure(
        run("prune", "--url", url, "--days", "1", "--statuses", "running"), "statuses"
    )


def test_migration_commands(run: Run, database_url: URL) -> None:
    url = url_text(database_url)
    head = migrations.head_revision()
    assert run("upgrade", "--url", url).stdout.strip() == head
    assert run("current", "--url", url).stdout.strip() == head
    assert _json(run, "current", "--url", url) == {
        "revision": head,
        "head": head,
        "up_to_date": True,
    }
    assert run("downgrade", "0002", "--url", url).stdout.strip() == "0002"
    assert run("stamp", "0003", "--url", url).stdout.strip() == "0003"
    listed = run("history", "--url", url)
    assert listed.exit_code == 0
    assert "0002 -> 0003 (current)" in listed.stdout and f"-> {head} (head)" in listed.stdout
    revisions = _json(run, "history")
    assert revisions[0]["revision"] == "0001"


def test_metrics_refuses_a_port_in_use(run: Run, queue_url: URL) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        assert_short_failure(
            run("metrics", "--port", port, "--addr", "127.0.0.1", "--url", url_text(queue_url)),
            f"cannot listen on 127.0.0.1:{port}",
        )


def test_worker_hook_help(run: Run) -> None:
    result = run("worker", "--help")
    assert result.exit_code == 0
    for option in ("--app", "--url", "--concurrency", "--burst"):
        assert option in result.stdout


def test_every_command_takes_url(run: Run) -> None:
    for command in (
        ["status"],
        ["tasks", "list"],
        ["tasks", "show"],
        ["tasks", "retry"],
        ["tasks", "cancel"],
        ["workers", "list"],
        ["doctor"],
        ["prune"],
        ["metrics"],
        ["current"],
        ["upgrade"],
        ["downgrade"],
        ["stamp"],
        ["history"],
        ["worker"],
    ):
        assert "--url" in run(*command, "--help").stdout, command


# --- queue.requeue, on every backend ----------------------------------------------------------


def test_retry_task_requeues_only_ended_tasks(storage: Storage) -> None:
    fill_queue(storage)
    again = storage.queue.requeue("sms-1")
    assert again.status is TaskStatus.PENDING and again.worker_id is None
    assert again.completed_at is None and again.retry_count == 0
    with pytest.raises(IllegalTransitionError):
        storage.queue.requeue("sms-1")
    with pytest.raises(NotFoundError):
        storage.queue.requeue("missing")
    storage.queue.cancel("sms-1", "changed my mind")
    assert storage.queue.requeue("sms-1").status is TaskStatus.PENDING


def test_prune_reports_each_batch(storage: Storage) -> None:
    fill_queue(storage)
    time.sleep(1.1)  # the cutoff is in whole seconds
    batches: list[int] = []
    report = storage.queue.prune(timedelta(0), batch_size=1, on_batch=batches.append)
    assert report.tasks == 2
    assert sum(batches) == 2 and all(n <= 1 for n in batches)
