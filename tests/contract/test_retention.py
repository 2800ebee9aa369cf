"""queue.prune: finished tasks and their log rows go once they ended long enough ago."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, select

from asynctaskmanager import (
    LogType,
    Storage,
    Task,
    TaskLog,
    TaskStatus,
    ValidationError,
    Worker,
    WorkerStatus,
    open_storage,
)
from asynctaskmanager.cli import main as cli_main
from asynctaskmanager.domain import limits
from asynctaskmanager.infrastructure.expressions import db_now

DAY = timedelta(days=1)
WEEK = timedelta(days=7)


def _now(storage: Storage) -> datetime:
    return storage.run(lambda uow: uow.connection.execute(select(db_now())).scalar_one())


def _task(
    task_id: str, now: datetime, status: TaskStatus, created: int, ended: int | None, **more: Any
) -> Task:
    """A task created ``created`` days and ended ``ended`` days before ``now``."""
    return Task(
        "job",
        task_id=task_id,
        status=status,
        created_at=now - created * DAY,
        completed_at=None if ended is None else now - ended * DAY,
        **more,
    )


def _ids(storage: Storage) -> set[str]:
    return {task.task_id for task in storage.tasks.list(limit=10_000)}


def test_prune_deletes_only_tasks_that_were_created_and_ended_before_the_cutoff(
    storage: Storage,
) -> None:
    now = _now(storage)
    storage.tasks.create_many(
        [
            _task("old-done", now, TaskStatus.COMPLETED, 10, 9),
            _task("old-failed", now, TaskStatus.FAILED, 10, 9),
            _task("old-cancelled", now, TaskStatus.CANCELLED, 10, 9),
            _task("recent-done", now, TaskStatus.COMPLETED, 2, 1),
            _task("long-runner-done", now, TaskStatus.COMPLETED, 10, 1),
            _task("old-pending", now, TaskStatus.PENDING, 10, None),
            _task("old-running", now, TaskStatus.RUNNING, 10, None, worker_id="w1"),
        ]
    )
    storage.task_logs.create_many(
        [
            TaskLog("old-done", LogType.CREATED, None, TaskStatus.PENDING),
            TaskLog("old-done", LogType.COMPLETED, TaskStatus.RUNNING, TaskStatus.COMPLETED),
            TaskLog("recent-done", LogType.CREATED, None, TaskStatus.PENDING),
        ]
    )

    report = storage.queue.prune(WEEK)

    assert (report.tasks, report.logs) == (3, 2)
    assert abs(report.cutoff - (now - WEEK)) < timedelta(minutes=1)
    assert _ids(storage) == {"recent-done", "long-runner-done", "old-pending", "old-running"}
    assert storage.task_logs.count_for_task("old-done") == 0
    assert storage.task_logs.count_for_task("recent-done") == 1
    again = storage.queue.prune(WEEK)
    assert (again.tasks, again.logs) == (0, 0)


def test_prune_works_through_in_batches_past_tasks_it_must_keep(storage: Storage) -> None:
    now = _now(storage)
    tasks = []
    for i in range(30):
        # Every third old task is still pending: each batch has to resume past them.
        status = TaskStatus.PENDING if i % 3 == 0 else TaskStatus.COMPLETED
        ended = None if status is TaskStatus.PENDING else 20
        tasks.append(
            Task(
                "job",
                task_id=f"t{i:02d}",
                status=status,
                created_at=now - (40 - i) * DAY,
                completed_at=None if ended is None else now - ended * DAY,
            )
        )
    storage.tasks.create_many(tasks)

    report = storage.queue.prune(WEEK, batch_size=4)

    assert report.tasks == 20
    assert _ids(storage) == {f"t{i:02d}" for i in range(0, 30, 3)}


def test_prune_deletes_workers_offline_long_ago_that_hold_nothing(storage: Storage) -> None:
    now = _now(storage)

    def worker(worker_id: str, status: WorkerStatus, silent_days: int, load: int = 0) -> Worker:
        return Worker(
            worker_id,
            worker_id,
            "10.0.0.1:7000",
            status=status,
            current_load=load,
            last_heartbeat=now - silent_days * DAY,
        )

    for item in (
        worker("gone", WorkerStatus.OFFLINE, 10),
        worker("recently-gone", WorkerStatus.OFFLINE, 1),
        worker("silent-but-online", WorkerStatus.ONLINE, 10),
        worker("gone-with-load", WorkerStatus.OFFLINE, 10, load=1),
        worker("gone-holding-a-task", WorkerStatus.OFFLINE, 10),
    ):
        storage.workers.create(item)
    storage.tasks.create(
        _task("held", now, TaskStatus.RUNNING, 10, None, worker_id="gone-holding-a-task")
    )

    report = storage.queue.prune(WEEK)

    assert report.workers == 1
    assert storage.workers.find("gone") is None
    remaining = {item.worker_id for item in storage.workers.list()}
    assert remaining == {
        "recently-gone",
        "silent-but-online",
        "gone-with-load",
        "gone-holding-a-task",
    }


def test_prune_spares_a_worker_the_sweep_has_only_just_marked_offline(storage: Storage) -> None:
    now = _now(storage)
    dead_after = storage.queue.settings.dead_after
    for worker_id, silent in (("just-swept", dead_after / 3), ("long-dead", dead_after * 2)):
        storage.workers.create(
            Worker(
                worker_id,
                worker_id,
                "10.0.0.1:7000",
                status=WorkerStatus.OFFLINE,
                last_heartbeat=now - silent,
            )
        )
    report = storage.queue.prune(timedelta(0))
    assert report.workers == 1
    assert [item.worker_id for item in storage.workers.list()] == ["just-swept"]


def test_prune_of_an_age_older_than_any_timestamp_prunes_nothing(storage: Storage) -> None:
    storage.tasks.create(_task("done", _now(storage), TaskStatus.COMPLETED, 10, 9))
    report = storage.queue.prune(timedelta(days=1_095_000))
    assert (report.tasks, report.workers) == (0, 0)
    assert report.cutoff == limits.TIMESTAMP_MIN
    assert storage.queue.prune(WEEK).cutoff.microsecond == 0  # as stored: whole seconds


def test_prune_keeps_the_final_statuses_it_is_not_asked_for(storage: Storage) -> None:
    now = _now(storage)
    storage.tasks.create_many(
        [
            _task("done", now, TaskStatus.COMPLETED, 10, 9),
            _task("failed", now, TaskStatus.FAILED, 10, 9),
            _task("cancelled", now, TaskStatus.CANCELLED, 10, 9),
        ]
    )
    report = storage.queue.prune(WEEK, statuses=[TaskStatus.COMPLETED, TaskStatus.CANCELLED])
    assert report.tasks == 2
    assert _ids(storage) == {"failed"}


@pytest.mark.parametrize(
    ("arguments", "field"),
    [
        ({"older_than": -DAY}, "older_than"),
        ({"older_than": 7}, "older_than"),
        ({"older_than": WEEK, "batch_size": 0}, "batch_size"),
        ({"older_than": WEEK, "batch_size": 10_001}, "batch_size"),
        ({"older_than": WEEK, "statuses": [TaskStatus.RUNNING]}, "statuses"),
        ({"older_than": WEEK, "statuses": []}, "statuses"),
        ({"older_than": WEEK, "statuses": "completed"}, "statuses"),
    ],
)
def test_prune_refuses_bad_arguments_by_name(
    storage: Storage, arguments: dict[str, Any], field: str
) -> None:
    storage.tasks.create(_task("done", _now(storage), TaskStatus.COMPLETED, 10, 9))
    with pytest.raises(ValidationError) as raised:
        storage.queue.prune(**arguments)
    assert raised.value.field == field
    assert _ids(storage) == {"done"}


def test_prune_on_sqlite_walks_the_created_at_index_and_deletes_by_key(
    sqlite_storage: Storage,
) -> None:
    """Without statistics SQLite would gather every finished row by status, then sort."""
    now = _now(sqlite_storage)
    sqlite_storage.tasks.create(_task("old", now, TaskStatus.COMPLETED, 10, 9))
    sent: list[tuple[str, Any]] = []

    def capture(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        sent.append((statement, parameters))

    event.listen(sqlite_storage.engine, "before_cursor_execute", capture)
    try:
        assert sqlite_storage.queue.prune(WEEK).tasks == 1
    finally:
        event.remove(sqlite_storage.engine, "before_cursor_execute", capture)
    [select_task] = [item for item in sent if item[0].startswith("SELECT task.task_id")]
    [delete_task] = [item for item in sent if item[0].startswith("DELETE FROM task ")]
    with sqlite_storage.engine.connect() as connection:
        plans = {
            name: " | ".join(
                str(row[-1])
                for row in connection.exec_driver_sql("EXPLAIN QUERY PLAN " + sql, parameters)
            )
            for name, (sql, parameters) in (("select", select_task), ("delete", delete_task))
        }
    assert "USING INDEX ix_task_created_at" in plans["select"], plans
    assert "TEMP B-TREE" not in plans["select"], plans
    assert "PRIMARY KEY" in plans["delete"] or "sqlite_autoindex_task" in plans["delete"], plans


def test_prune_from_the_command_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = f"sqlite:///{tmp_path}/cli.db"
    with open_storage(url, upgrade=True) as storage:
        now = _now(storage)
        storage.tasks.create_many(
            [
                _task("old", now, TaskStatus.COMPLETED, 40, 35),
                _task("recent", now, TaskStatus.COMPLETED, 10, 9),
            ]
        )
    assert cli_main(["prune", "--url", url, "--days", "30"]) == 0
    assert "pruned 1 tasks, 0 log rows and 0 workers" in capsys.readouterr().out
    with open_storage(url) as storage:
        assert _ids(storage) == {"recent"}
    for days in ("-1", "1e10", "nan"):
        assert cli_main(["prune", "--url", url, "--days", days]) == 1
        assert "days" in capsys.readouterr().err
