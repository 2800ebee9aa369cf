"""The worker runtime in process, on every backend: outcomes, timeouts, shutdown, burst, and
two runtimes sharing one database."""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest

from asynctaskmanager import (
    ConfigurationError,
    LogType,
    Storage,
    Task,
    TaskPriority,
    TaskRequest,
    TaskStatus,
    ValidationError,
    Worker,
    WorkerStatus,
)
from asynctaskmanager.worker import IdleBackoff, WorkerRuntime, run_worker
from tests.worker.conftest import Running, configure, open_fast, wait_until
from tests.worker.handlers import HANDLERS

NO_SWEEP: dict[str, Any] = {"sweep_interval": None, "poll_interval": 0.01}


def status_of(storage: Storage, task: Task) -> Task:
    return storage.tasks.get(task.task_id)


def test_handlers_succeed_and_fail_with_their_message(
    worker_storage: Storage, caplog: pytest.LogCaptureFixture
) -> None:
    storage = worker_storage
    configure(storage, "work.echo")
    configure(storage, "work.boom", default_max_retry=1)
    configure(storage, "work.junk", default_max_retry=0)
    echoes = [storage.queue.enqueue("work.echo", {"n": n}) for n in range(5)]
    boom = storage.queue.enqueue("work.boom", 7)
    junk = storage.queue.enqueue("work.junk")

    handlers = {**HANDLERS, "work.junk": lambda task: {1, 2}}  # a set is not JSON
    with caplog.at_level(logging.INFO, logger="asynctaskmanager.worker"):
        summary = run_worker(storage, handlers, burst=True, handle_signals=False, **NO_SWEEP)

    for task in echoes:
        done = status_of(storage, task)
        assert done.status is TaskStatus.COMPLETED
        assert done.result == {"echo": task.payload}
    failed = status_of(storage, boom)
    assert failed.status is TaskStatus.FAILED
    assert failed.retry_count == 1  # retried once by the type's strategy, then failed
    assert failed.error_message == "ValueError: bad payload 7"
    refused = status_of(storage, junk)
    assert refused.status is TaskStatus.FAILED
    assert refused.error_message is not None and "ValidationError" in refused.error_message
    assert (summary.completed, summary.failed, summary.dropped) == (5, 3, 0)
    worker = storage.workers.get(summary.worker_id)
    assert worker.status is WorkerStatus.OFFLINE
    assert worker.supported_types == sorted(handlers)

    # Every line about a task names it, and carries its id for structured handlers.
    task_lines = [r for r in caplog.records if hasattr(r, "task_id")]
    assert len(task_lines) >= 2 * 7
    for record in task_lines:
        assert record.task_id in record.getMessage()


def test_a_task_past_its_timeout_is_reported_and_keeps_its_slot(
    worker_storage: Storage, caplog: pytest.LogCaptureFixture
) -> None:
    storage = worker_storage
    configure(storage, "slow", default_timeout=1)
    configure(storage, "quick")
    spans: dict[str, tuple[float, float]] = {}

    def timed(seconds: float) -> Any:
        def handler(task: Task) -> Any:
            began = time.monotonic()
            time.sleep(seconds)
            spans[task.task_type] = (began, time.monotonic())
            return None

        return handler

    slow = storage.queue.enqueue("slow", priority=TaskPriority.HIGH)
    storage.queue.enqueue("quick")
    with caplog.at_level(logging.WARNING, logger="asynctaskmanager.worker"):
        summary = run_worker(
            storage,
            {"slow": timed(2.2), "quick": timed(0)},
            concurrency=1,
            burst=True,
            handle_signals=False,
            **NO_SWEEP,
        )
    overdue = [r for r in caplog.records if "past its timeout" in r.getMessage()]
    assert [r.task_id for r in overdue] == [slow.task_id]  # type: ignore[attr-defined]
    # One slot: the quick task waited for the slow one's code to end, not for its timeout.
    assert spans["quick"][0] >= spans["slow"][1]
    assert summary.completed == 2


def test_an_outcome_after_the_store_took_the_task_back_is_dropped(
    worker_storage: Storage, caplog: pytest.LogCaptureFixture
) -> None:
    storage = worker_storage
    configure(storage, "stuck", default_timeout=1, default_max_retry=0)
    release = threading.Event()
    task = storage.queue.enqueue("stuck")
    runtime = WorkerRuntime(
        storage, {"stuck": lambda task: release.wait(10) and "late"}, **NO_SWEEP
    )
    with caplog.at_level(logging.WARNING, logger="asynctaskmanager.worker"):
        running = Running(runtime)
        wait_until(lambda: status_of(storage, task).status is TaskStatus.RUNNING, 5, "the claim")
        # The store's sweep times the attempt out (whole seconds: 1 s after its timeout).
        wait_until(lambda: task.task_id in storage.queue.sweep().failed, 5, "the sweep")
        wait_until(
            lambda: any("taken back by the store" in r.getMessage() for r in caplog.records),
            5,
            "the heartbeat to notice",
        )
        release.set()
        wait_until(lambda: runtime._summary.dropped == 1, 5, "the handler to end")
        runtime.stop()
        summary = running.join(10)
    final = status_of(storage, task)
    assert final.status is TaskStatus.FAILED
    assert final.error_message == "timed out after 1s"
    assert final.result is None
    assert (summary.completed, summary.dropped) == (0, 1)


def test_shutdown_finishes_what_it_can_and_hands_back_the_rest(worker_storage: Storage) -> None:
    storage = worker_storage
    configure(storage, "work.sleep")
    configure(storage, "blocked")
    release = threading.Event()
    quick = [storage.queue.enqueue("work.sleep", {"seconds": 0.3}) for _ in range(2)]
    blocked = storage.queue.enqueue("blocked")
    runtime = WorkerRuntime(
        storage,
        {**HANDLERS, "blocked": lambda task: release.wait(20) and "late"},
        concurrency=3,
        shutdown_timeout=1.0,
        **NO_SWEEP,
    )
    running = Running(runtime)
    wait_until(
        lambda: (
            storage.tasks.count() == 3
            and all(status_of(storage, t).status is TaskStatus.RUNNING for t in [*quick, blocked])
        ),
        5,
        "three running tasks",
    )
    asked = time.monotonic()
    runtime.stop()
    summary = running.join(5)
    took = time.monotonic() - asked
    assert 0.9 <= took < 3.0  # the deadline was given, and honoured
    for task in quick:
        assert status_of(storage, task).status is TaskStatus.COMPLETED
    handed_back = status_of(storage, blocked)
    assert handed_back.status is TaskStatus.PENDING
    assert handed_back.retry_count == 1
    assert handed_back.error_message == "worker deregistered"
    assert summary.handed_back == [blocked.task_id]
    worker = storage.workers.get(summary.worker_id)
    assert (worker.status, worker.current_load) == (WorkerStatus.OFFLINE, 0)
    # The handler ends later: its outcome is not recorded.
    release.set()
    time.sleep(0.3)
    assert status_of(storage, blocked).status is TaskStatus.PENDING


def test_stop_at_once_leaves_the_tasks_to_the_sweep(worker_storage: Storage) -> None:
    storage = worker_storage
    configure(storage, "blocked")
    release = threading.Event()
    task = storage.queue.enqueue("blocked")
    runtime = WorkerRuntime(
        storage, {"blocked": lambda task: release.wait(20)}, shutdown_timeout=30, **NO_SWEEP
    )
    running = Running(runtime)
    wait_until(lambda: status_of(storage, task).status is TaskStatus.RUNNING, 5, "the claim")
    runtime.stop()
    runtime.stop(now=True)  # a second signal
    summary = running.join(2)
    assert summary.stopped_at_once
    held = status_of(storage, task)
    assert (held.status, held.worker_id) == (TaskStatus.RUNNING, summary.worker_id)
    # Silent for dead_after (2 s): a sweep takes the task back.
    wait_until(lambda: task.task_id in storage.queue.sweep().requeued, 6, "the rescue")
    release.set()


def test_two_runtimes_split_the_work_and_run_each_task_once(worker_storage: Storage) -> None:
    storage = worker_storage
    configure(storage, "split", max_concurrent=100)
    tasks = storage.queue.enqueue_many([TaskRequest("split", {"n": n}) for n in range(40)])
    calls: Counter[str] = Counter()
    lock = threading.Lock()

    def handler(task: Task) -> Any:
        with lock:
            calls[task.task_id] += 1
        time.sleep(0.02)
        return task.payload["n"]

    second = storage if storage.backend == "memory" else open_fast(storage.engine.url)
    try:
        runners = [
            Running(WorkerRuntime(own, {"split": handler}, concurrency=3, burst=True, **NO_SWEEP))
            for own in (storage, second)
        ]
        summaries = [runner.join(60) for runner in runners]
    finally:
        if second is not storage:
            second.close()
    assert calls == Counter({task.task_id: 1 for task in tasks})
    assert sum(s.completed for s in summaries) == 40
    assert all(s.completed > 0 for s in summaries), "one runtime did all the work"
    for task in tasks:
        done = status_of(storage, task)
        assert (done.status, done.result) == (TaskStatus.COMPLETED, task.payload["n"])
        logs = Counter(log.log_type for log in storage.task_logs.list_for_task(task.task_id))
        assert logs[LogType.COMPLETED] == 1
        assert logs[LogType.CLAIMED] == 1


def test_burst_waits_for_a_type_held_at_its_limit(worker_storage: Storage) -> None:
    storage = worker_storage
    configure(storage, "limited", max_concurrent=1)
    storage.queue.enqueue_many([TaskRequest("limited", {"n": n}) for n in range(3)])
    # Someone else holds the type's only slot.
    storage.queue.register_worker(Worker("holder", "holder", "elsewhere"))
    [held] = storage.queue.claim("holder", limit=1)
    runner = Running(
        WorkerRuntime(storage, {"limited": lambda task: "done"}, burst=True, **NO_SWEEP)
    )
    time.sleep(1.0)
    assert runner.thread.is_alive(), "burst quit while tasks waited behind a limit"
    assert storage.tasks.count() == 3
    assert sum(1 for t in storage.tasks.list() if t.status is TaskStatus.PENDING) == 2
    storage.queue.complete(held, "by the holder")
    summary = runner.join(10)
    assert summary.completed == 2
    assert all(t.status is TaskStatus.COMPLETED for t in storage.tasks.list())


def test_burst_quits_when_nothing_is_runnable(worker_storage: Storage) -> None:
    storage = worker_storage
    configure(storage, "later")
    configure(storage, "off")
    storage.queue.enqueue("later", delay=timedelta(hours=1))  # not due
    off = storage.queue.enqueue("off")
    storage.task_configs.update(replace(storage.task_configs.get("off"), enabled=False))
    began = time.monotonic()
    summary = run_worker(
        storage,
        {"later": HANDLERS["work.echo"], "off": HANDLERS["work.echo"]},
        burst=True,
        handle_signals=False,
        **NO_SWEEP,
    )
    assert time.monotonic() - began < 3
    assert summary.completed == 0
    assert status_of(storage, off).status is TaskStatus.PENDING


def test_slots_held_by_unwritten_outcomes_do_not_count_as_an_idle_queue(
    worker_storage: Storage, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The store frees a slot when the outcome is written; a claim cut short by a slot whose
    handler has returned but whose outcome waits for the completer must not send the worker
    into the idle back-off (which grows to max_poll_interval) with work still queued."""
    storage = worker_storage
    configure(storage, "quick")
    storage.queue.enqueue_many([TaskRequest("quick", {"n": n}) for n in range(12)])
    idle_waits: list[float] = []
    backoff_next = IdleBackoff.next

    def counted(self: IdleBackoff) -> float:
        idle_waits.append(backoff_next(self))
        return idle_waits[-1]

    monkeypatch.setattr(IdleBackoff, "next", counted)
    summary = run_worker(
        storage,
        {"quick": lambda task: None},
        concurrency=1,
        burst=True,
        handle_signals=False,
        sweep_interval=None,
        poll_interval=0.2,
        max_poll_interval=5.0,
    )
    assert summary.completed == 12
    assert len(idle_waits) <= 1, idle_waits


def test_the_sweep_runs_in_one_worker_and_rescues_a_dead_ones_tasks(
    worker_storage: Storage,
) -> None:
    storage = worker_storage
    configure(storage, "work.echo")
    storage.queue.register_worker(Worker("dead", "dead", "elsewhere"))
    task = storage.queue.enqueue("work.echo", "x")
    assert storage.queue.claim("dead") != []
    runtime = WorkerRuntime(
        storage, HANDLERS, sweep_interval=timedelta(milliseconds=300), poll_interval=0.01
    )
    running = Running(runtime)
    wait_until(lambda: status_of(storage, task).status is TaskStatus.COMPLETED, 10, "the rescue")
    runtime.stop()
    summary = running.join(5)
    assert summary.completed == 1
    rescued = status_of(storage, task)
    assert (rescued.retry_count, rescued.worker_id) == (1, summary.worker_id)
    assert storage.workers.get("dead").status is WorkerStatus.OFFLINE


def test_process_pool_runs_module_level_handlers(memory_storage: Storage) -> None:
    storage = memory_storage
    configure(storage, "work.echo")
    configure(storage, "work.boom", default_max_retry=0)
    echo = storage.queue.enqueue("work.echo", {"in": "a process"})
    boom = storage.queue.enqueue("work.boom", 1)
    summary = run_worker(
        storage,
        HANDLERS,
        concurrency=2,
        use_processes=True,
        burst=True,
        handle_signals=False,
        **NO_SWEEP,
    )
    assert status_of(storage, echo).result == {"echo": {"in": "a process"}}
    assert status_of(storage, boom).error_message == "ValueError: bad payload 1"
    assert (summary.completed, summary.failed) == (1, 1)


def test_bad_options_are_refused_before_anything_runs(memory_storage: Storage) -> None:
    for handlers, options in [
        ({}, {}),
        ({"t": "not callable"}, {}),
        ({"": HANDLERS["work.echo"]}, {}),
        (HANDLERS, {"concurrency": 0}),
        (HANDLERS, {"shutdown_timeout": -1}),
        (HANDLERS, {"sweep_interval": timedelta(0)}),
    ]:
        with pytest.raises(ValidationError):
            WorkerRuntime(memory_storage, handlers, **options)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="process pool"):
        WorkerRuntime(memory_storage, {"t": lambda task: None}, use_processes=True)
    assert memory_storage.workers.count() == 0
