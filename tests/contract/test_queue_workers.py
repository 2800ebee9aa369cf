"""Workers on every backend: heartbeats, deregistering, registering again, and the sweep
that takes back the tasks of dead workers and of tasks past their timeout.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import func, select, update

from asynctaskmanager import (
    LogType,
    NotFoundError,
    QueueSettings,
    Storage,
    SweepReport,
    TaskQueue,
    TaskRequest,
    TaskStatus,
    UnitOfWork,
    WorkerStatus,
)
from asynctaskmanager.infrastructure.expressions import db_now
from asynctaskmanager.infrastructure.schema import task_log_table as lg
from asynctaskmanager.infrastructure.schema import worker_table as w
from tests.support.queue_helpers import (
    SWEEP,
    T,
    assert_load_exact,
    configure,
    in_tx,
    keep_alive,
    load_of,
    now_of,
    register,
    set_task,
    set_worker,
)

# --- heartbeats and registration -----------------------------------------------------------


def test_heartbeat_reports_held_tasks(storage: Storage, queue: TaskQueue) -> None:
    configure(storage)
    register(queue)
    queue.enqueue_many(TaskRequest("job") for _ in range(2))
    held = queue.claim("w1", limit=2)
    set_worker(storage, "w1", last_heartbeat=now_of(storage) - timedelta(minutes=5))
    assert queue.heartbeat("w1") == {task.task_id for task in held}
    heartbeat = storage.workers.get("w1").last_heartbeat
    assert heartbeat is not None and heartbeat >= now_of(storage) - timedelta(seconds=1)
    with pytest.raises(NotFoundError):
        queue.heartbeat("ghost")


def test_heartbeat_revives_an_offline_worker_but_not_a_draining_one(
    storage: Storage, queue: TaskQueue
) -> None:
    register(queue)
    set_worker(storage, "w1", status=WorkerStatus.OFFLINE.value)
    queue.heartbeat("w1")
    assert storage.workers.get("w1").status is WorkerStatus.ONLINE
    set_worker(storage, "w1", status=WorkerStatus.DRAINING.value)
    queue.heartbeat("w1")
    assert storage.workers.get("w1").status is WorkerStatus.DRAINING


def test_deregister_requeues_what_the_worker_held(storage: Storage, queue: TaskQueue) -> None:
    configure(storage)
    register(queue)
    task = queue.enqueue("job")
    [held] = queue.claim("w1")
    queue.deregister_worker("w1")
    worker = storage.workers.get("w1")
    assert (worker.status, worker.current_load) == (WorkerStatus.OFFLINE, 0)
    stored = storage.tasks.get(task.task_id)
    assert (stored.status, stored.retry_count, stored.worker_id) == (TaskStatus.PENDING, 1, None)
    assert queue.complete(held) is False


def test_register_again_takes_back_what_the_old_incarnation_held(
    storage: Storage, queue: TaskQueue
) -> None:
    configure(storage)
    register(queue)
    task = queue.enqueue("job")
    [held] = queue.claim("w1")
    register(queue)
    stored = storage.tasks.get(task.task_id)
    assert (stored.status, stored.retry_count) == (TaskStatus.PENDING, 1)
    assert load_of(storage) == 0
    assert queue.complete(held) is False


# --- the sweep -----------------------------------------------------------------------------


def test_sweep_takes_back_a_dead_workers_tasks(storage: Storage) -> None:
    queue = TaskQueue(storage.runner, SWEEP)
    configure(storage, "retry", default_max_retry=2)
    configure(storage, "once", default_max_retry=0)
    register(queue, "dead")
    register(queue, "alive")
    requeue = queue.enqueue("retry")
    fail = queue.enqueue("once")
    assert len(queue.claim("dead", limit=2)) == 2
    kept = queue.enqueue("retry")
    [alive_task] = queue.claim("alive")
    assert alive_task.task_id == kept.task_id
    set_worker(storage, "dead", last_heartbeat=now_of(storage) - timedelta(seconds=30))
    keep_alive(queue, "alive")

    report = queue.sweep()

    assert report.workers_marked_offline == ["dead"]
    assert report.requeued == [requeue.task_id]
    assert report.failed == [fail.task_id]
    dead = storage.workers.get("dead")
    assert (dead.status, dead.current_load) == (WorkerStatus.OFFLINE, 0)
    assert storage.workers.get("alive").status is WorkerStatus.ONLINE
    requeued = storage.tasks.get(requeue.task_id)
    assert (requeued.status, requeued.retry_count, requeued.worker_id) == (
        TaskStatus.PENDING,
        1,
        None,
    )
    assert storage.tasks.get(fail.task_id).status is TaskStatus.FAILED
    for task_id, to_status in (
        (requeue.task_id, TaskStatus.PENDING),
        (fail.task_id, TaskStatus.FAILED),
    ):
        rescued = [
            log
            for log in storage.task_logs.list_for_task(task_id)
            if log.log_type is LogType.RESCUED
        ]
        assert len(rescued) == 1
        assert (rescued[0].from_status, rescued[0].to_status) == (TaskStatus.RUNNING, to_status)
        assert rescued[0].message == "worker lost"
        assert rescued[0].details["worker_id"] == "dead"
    assert storage.tasks.get(kept.task_id).status is TaskStatus.RUNNING
    # A second sweep finds nothing more to do.
    keep_alive(queue, "alive")
    assert queue.sweep() == SweepReport([], [], [])


def test_sweep_takes_back_tasks_of_a_silent_worker_already_marked_offline(
    storage: Storage,
) -> None:
    """An earlier sweep marked the worker offline and stopped before taking its tasks back:
    the next sweep must still take them back, not wait for their timeouts."""
    queue = TaskQueue(storage.runner, SWEEP)
    configure(storage, default_timeout=3600)
    register(queue)
    task = queue.enqueue("job")
    queue.claim("w1")
    set_worker(
        storage,
        "w1",
        status=WorkerStatus.OFFLINE.value,
        last_heartbeat=now_of(storage) - timedelta(minutes=5),
    )
    report = queue.sweep()
    assert report.workers_marked_offline == []
    assert report.requeued == [task.task_id]
    assert load_of(storage) == 0


def test_sweep_takes_back_a_task_past_its_timeout(storage: Storage) -> None:
    queue = TaskQueue(storage.runner, SWEEP)
    configure(storage)
    register(queue)
    late = queue.enqueue("job", timeout=5)
    on_time = queue.enqueue("job", timeout=3600)
    queue.claim("w1", limit=2)
    set_task(storage, late.task_id, started_at=now_of(storage) - timedelta(seconds=20))
    keep_alive(queue, "w1")
    report = queue.sweep()
    assert report.workers_marked_offline == []
    assert report.requeued == [late.task_id]
    [rescued] = [
        log
        for log in storage.task_logs.list_for_task(late.task_id)
        if log.log_type is LogType.RESCUED
    ]
    assert rescued.message == "timed out after 5s"
    assert storage.tasks.get(on_time.task_id).status is TaskStatus.RUNNING
    assert storage.workers.get("w1").status is WorkerStatus.ONLINE
    assert load_of(storage) == 1
    assert_load_exact(storage)


def test_sweep_never_takes_back_a_live_workers_task(storage: Storage) -> None:
    # Wide margins, so that a stalled machine cannot make the worker dead or the task late.
    queue = TaskQueue(storage.runner, QueueSettings(heartbeat_interval=timedelta(seconds=30)))
    configure(storage, default_timeout=600)
    register(queue)
    queue.enqueue_many(TaskRequest("job") for _ in range(3))
    held = queue.claim("w1", limit=3)
    # Two intervals late is not dead (three missed heartbeats are) ...
    set_worker(storage, "w1", last_heartbeat=now_of(storage) - timedelta(seconds=60))
    # ... and a task 100 s short of its timeout is not late.
    set_task(storage, held[0].task_id, started_at=now_of(storage) - timedelta(seconds=500))
    assert queue.sweep() == SweepReport([], [], [])
    for task in held:
        assert storage.tasks.get(task.task_id).status is TaskStatus.RUNNING
        assert queue.complete(task)


def test_sweep_spares_a_worker_that_heartbeats_before_the_rescue(
    storage: Storage, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The sweep found the worker silent, then its heartbeat arrived: it is alive, and its
    task must not be taken back (it would then run twice)."""
    queue = TaskQueue(storage.runner, SWEEP)
    configure(storage)
    register(queue)
    task = queue.enqueue("job")
    [held] = queue.claim("w1")
    set_worker(storage, "w1", last_heartbeat=now_of(storage) - timedelta(seconds=30))

    original = storage.runner.run
    calls = 0

    def run(work: Callable[[UnitOfWork], T], **options: bool) -> T:
        nonlocal calls
        calls += 1
        if calls == 2:  # after the sweep's first transaction (finding the dead) ...
            original(
                lambda uow: uow.connection.execute(
                    update(w).where(w.c.worker_id == "w1").values(last_heartbeat=db_now())
                )
            )
        return original(work, **options)

    monkeypatch.setattr(storage.runner, "run", run)
    report = queue.sweep()
    monkeypatch.undo()
    assert report.requeued == [] and report.failed == []
    assert storage.tasks.get(task.task_id).status is TaskStatus.RUNNING
    assert storage.workers.get("w1").status is WorkerStatus.ONLINE
    assert queue.complete(held) is True


def test_concurrent_sweeps_take_each_task_back_once(storage: Storage) -> None:
    queue = TaskQueue(storage.runner, SWEEP)
    configure(storage, default_max_retry=3, max_concurrent=100)
    register(queue, capacity=100)
    tasks = queue.enqueue_many(TaskRequest("job") for _ in range(30))
    assert len(queue.claim("w1", limit=30)) == 30
    set_worker(storage, "w1", last_heartbeat=now_of(storage) - timedelta(minutes=1))

    barrier = threading.Barrier(4)
    reports: list[Any] = []
    errors: list[BaseException] = []

    def sweep() -> None:
        try:
            barrier.wait()
            reports.append(queue.sweep())
        except BaseException as error:  # pragma: no cover - reported below
            errors.append(error)

    threads = [threading.Thread(target=sweep) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    requeued = [task_id for report in reports for task_id in report.requeued]
    assert sorted(requeued) == sorted(task.task_id for task in tasks)
    assert sum(len(report.workers_marked_offline) for report in reports) == 1

    def rescued_counts(uow: UnitOfWork) -> dict[str, int]:
        query = (
            select(lg.c.task_id, func.count())
            .where(lg.c.log_type == LogType.RESCUED.value)
            .group_by(lg.c.task_id)
        )
        return {task_id: int(n) for task_id, n in uow.connection.execute(query)}

    counts = in_tx(storage, rescued_counts)
    assert counts == {task.task_id: 1 for task in tasks}
    for task in tasks:
        assert storage.tasks.get(task.task_id).retry_count == 1
    assert load_of(storage) == 0
