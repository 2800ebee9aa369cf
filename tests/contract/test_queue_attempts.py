"""The end of an attempt on every backend: complete, fail (with its retries and their
back-off), cancel, and a late answer from an attempt that was taken back. Each applies only
to the attempt it names, once.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal

import pytest

from asynctaskmanager import (
    IllegalTransitionError,
    LogType,
    NotFoundError,
    QueueSettings,
    RetryPolicy,
    RetryStrategy,
    Storage,
    SweepReport,
    Task,
    TaskQueue,
    TaskRequest,
    TaskStatus,
    WorkerStatus,
)
from asynctaskmanager.domain import attempts
from tests.support.queue_helpers import (
    NO_JITTER,
    SWEEP,
    claim_if_due,
    configure,
    load_of,
    logs_of,
    now_of,
    register,
    set_task,
    set_worker,
)


def test_complete_applies_once_and_logs(storage: Storage, queue: TaskQueue) -> None:
    configure(storage)
    register(queue)
    queue.enqueue("job")
    [task] = queue.claim("w1")
    assert queue.complete(task, {"ok": True}) is True
    stored = storage.tasks.get(task.task_id)
    assert stored.status is TaskStatus.COMPLETED and stored.result == {"ok": True}
    assert stored.completed_at is not None
    assert load_of(storage) == 0
    expected = [
        (LogType.CREATED, None, TaskStatus.PENDING),
        (LogType.CLAIMED, TaskStatus.PENDING, TaskStatus.RUNNING),
        (LogType.COMPLETED, TaskStatus.RUNNING, TaskStatus.COMPLETED),
    ]
    assert logs_of(storage, task.task_id) == expected
    # The same lease a second time: refused, nothing written.
    assert queue.complete(task, {"ok": False}) is False
    assert queue.fail(task, "late") is False
    assert storage.tasks.get(task.task_id).result == {"ok": True}
    assert logs_of(storage, task.task_id) == expected
    assert load_of(storage) == 0


def test_fail_without_retries_left_ends_failed(storage: Storage, queue: TaskQueue) -> None:
    configure(storage, default_max_retry=0)
    register(queue)
    queue.enqueue("job")
    [task] = queue.claim("w1")
    assert queue.fail(task, "boom") is True
    stored = storage.tasks.get(task.task_id)
    assert stored.status is TaskStatus.FAILED and stored.error_message == "boom"
    assert stored.retry_count == 0 and stored.completed_at is not None
    assert logs_of(storage, task.task_id) == [
        (LogType.CREATED, None, TaskStatus.PENDING),
        (LogType.CLAIMED, TaskStatus.PENDING, TaskStatus.RUNNING),
        (LogType.FAILED, TaskStatus.RUNNING, TaskStatus.FAILED),
    ]
    assert queue.fail(task, "again") is False
    assert len(logs_of(storage, task.task_id)) == 3
    assert load_of(storage) == 0


def test_fail_with_retry_false_ends_failed(storage: Storage, queue: TaskQueue) -> None:
    configure(storage, default_max_retry=5)
    register(queue)
    queue.enqueue("job")
    [task] = queue.claim("w1")
    assert queue.fail(task, "fatal", retry=False) is True
    assert storage.tasks.get(task.task_id).status is TaskStatus.FAILED


@pytest.mark.parametrize("strategy", list(RetryStrategy))
def test_retry_delays_follow_the_config(
    storage: Storage, queue: TaskQueue, strategy: RetryStrategy
) -> None:
    configure(
        storage,
        retry_strategy=strategy,
        retry_delay=4,
        backoff_rate=Decimal("3"),
        default_max_retry=3,
    )
    register(queue)
    task = queue.enqueue("job")
    policy = RetryPolicy(strategy, 4, Decimal("3"), max_delay=NO_JITTER.max_retry_delay)
    for attempt in (1, 2, 3):
        [held] = queue.claim("w1")
        assert held.retry_count == attempt - 1
        before = now_of(storage)
        assert queue.fail(held, f"failure {attempt}") is True
        after = now_of(storage)
        stored = storage.tasks.get(task.task_id)
        assert stored.status is TaskStatus.PENDING and stored.retry_count == attempt
        assert stored.worker_id is None and stored.started_at is None
        delay = timedelta(seconds=policy.delay_seconds(attempt))
        assert stored.scheduled_at is not None
        assert before + delay <= stored.scheduled_at <= after + delay
        logs = logs_of(storage, task.task_id)
        assert len(logs) == 1 + 2 * attempt  # created, then claimed + retry per attempt
        assert logs[-1] == (LogType.RETRY_SCHEDULED, TaskStatus.RUNNING, TaskStatus.PENDING)
        assert load_of(storage) == 0
        assert claim_if_due(storage, queue, "w1", stored.scheduled_at) == []
        set_task(storage, task.task_id, scheduled_at=after - timedelta(seconds=1))
    [last] = queue.claim("w1")
    assert queue.fail(last, "final") is True
    stored = storage.tasks.get(task.task_id)
    assert (stored.status, stored.retry_count) == (TaskStatus.FAILED, 3)
    assert [kind for kind, _, _ in logs_of(storage, task.task_id)].count(LogType.CLAIMED) == 4


def test_retry_delay_is_capped(storage: Storage) -> None:
    queue = TaskQueue(storage.runner, QueueSettings(retry_jitter=0.0, max_retry_delay=7))
    configure(storage, retry_strategy=RetryStrategy.EXPONENTIAL, retry_delay=100)
    register(queue)
    task = queue.enqueue("job")
    [held] = queue.claim("w1")
    before = now_of(storage)
    queue.fail(held, "x")
    after = now_of(storage)
    scheduled = storage.tasks.get(task.task_id).scheduled_at
    assert scheduled is not None
    assert before + timedelta(seconds=7) <= scheduled <= after + timedelta(seconds=7)


def test_illegal_transitions_raise(storage: Storage, queue: TaskQueue) -> None:
    configure(storage)
    register(queue)
    pending = queue.enqueue("job")
    with pytest.raises(IllegalTransitionError):
        queue.complete(pending)
    with pytest.raises(IllegalTransitionError):
        queue.fail(pending, "x")
    [held] = queue.claim("w1")
    assert queue.complete(held)
    with pytest.raises(IllegalTransitionError, match="completed -> cancelled"):
        queue.cancel(held.task_id)
    with pytest.raises(NotFoundError):
        queue.cancel("no-such-task")
    assert logs_of(storage, held.task_id)[-1][0] is LogType.COMPLETED


def test_cancel_pending_and_running(storage: Storage, queue: TaskQueue) -> None:
    configure(storage)
    register(queue)
    first, second = queue.enqueue_many([TaskRequest("job"), TaskRequest("job")])
    [held] = queue.claim("w1")
    assert held.task_id == first.task_id
    assert queue.cancel(second.task_id, "not needed") is True
    assert logs_of(storage, second.task_id)[-1] == (
        LogType.CANCELLED,
        TaskStatus.PENDING,
        TaskStatus.CANCELLED,
    )
    assert queue.cancel(held.task_id, "stop") is True
    assert load_of(storage) == 0
    stored = storage.tasks.get(held.task_id)
    assert stored.status is TaskStatus.CANCELLED and stored.error_message == "stop"
    assert logs_of(storage, held.task_id)[-1] == (
        LogType.CANCELLED,
        TaskStatus.RUNNING,
        TaskStatus.CANCELLED,
    )
    # The worker finishing anyway is refused and changes nothing.
    assert queue.complete(held, {"late": True}) is False
    assert storage.tasks.get(held.task_id).status is TaskStatus.CANCELLED
    assert len(logs_of(storage, held.task_id)) == 3
    assert load_of(storage) == 0
    with pytest.raises(IllegalTransitionError):
        queue.cancel(held.task_id)


def test_late_completion_after_rescue_and_reclaim_by_same_worker(storage: Storage) -> None:
    queue = TaskQueue(storage.runner, SWEEP)
    configure(storage, default_max_retry=3)
    register(queue)
    task = queue.enqueue("job")
    [old] = queue.claim("w1")
    set_worker(storage, "w1", last_heartbeat=now_of(storage) - timedelta(hours=1))
    report = queue.sweep()
    assert report.requeued == [task.task_id]
    assert queue.heartbeat("w1") == set()  # back online; it holds nothing any more
    [new] = queue.claim("w1")
    assert (new.task_id, new.worker_id, new.retry_count) == (old.task_id, "w1", 1)
    logs_before = logs_of(storage, task.task_id)
    assert queue.complete(old, {"from": "old attempt"}) is False
    assert queue.fail(old, "old attempt") is False
    stored = storage.tasks.get(task.task_id)
    assert (stored.status, stored.worker_id, stored.retry_count, stored.result) == (
        TaskStatus.RUNNING,
        "w1",
        1,
        None,
    )
    assert logs_of(storage, task.task_id) == logs_before
    assert load_of(storage) == 1
    assert queue.complete(new, {"from": "new attempt"}) is True
    assert storage.tasks.get(task.task_id).result == {"from": "new attempt"}
    assert load_of(storage) == 0


# --- a retry that would land past the last storable instant ------------------------------
# TIMESTAMP ends at 2038-01-19 03:14:07 UTC, years after the database's clock and more than
# the longest back-off (a year). The horizon is moved an hour past the database's clock, so
# that a two-hour back-off lands beyond it and a one-minute one before it.

LONG_BACK_OFF = QueueSettings(
    heartbeat_interval=timedelta(seconds=1),
    missed_heartbeats=2,
    retry_jitter=0.0,
    max_retry_delay=int(timedelta(days=1).total_seconds()),
)


@pytest.fixture
def horizon(storage: Storage, monkeypatch: pytest.MonkeyPatch) -> datetime:
    """The last instant a retry may land: an hour after the database's clock. Types "far"
    (a two-hour back-off) and "near" (a minute) are configured."""
    configure(storage, "far", retry_delay=2 * 3600, default_max_retry=3)
    configure(storage, "near", retry_delay=60, default_max_retry=3)
    last = now_of(storage) + timedelta(hours=1)
    monkeypatch.setattr(attempts, "RETRY_HORIZON", last)
    return last


def assert_failed_for_good(storage: Storage, task_id: str, log_type: LogType) -> None:
    stored = storage.tasks.get(task_id)
    assert (stored.status, stored.retry_count, stored.worker_id) == (TaskStatus.FAILED, 0, "w1")
    assert stored.completed_at is not None
    assert logs_of(storage, task_id)[-1] == (log_type, TaskStatus.RUNNING, TaskStatus.FAILED)


def assert_retried_before(storage: Storage, task_id: str, horizon: datetime) -> None:
    stored = storage.tasks.get(task_id)
    assert (stored.status, stored.retry_count, stored.worker_id) == (TaskStatus.PENDING, 1, None)
    assert stored.scheduled_at is not None and stored.scheduled_at <= horizon


def hold_far_and_near(storage: Storage) -> tuple[TaskQueue, Task, Task]:
    """A queue with a day's longest back-off, and w1 holding a "far" and a "near" task."""
    queue = TaskQueue(storage.runner, LONG_BACK_OFF)
    register(queue)
    far, near = queue.enqueue("far"), queue.enqueue("near")
    held = {task.task_id: task for task in queue.claim("w1", limit=2)}
    return queue, held[far.task_id], held[near.task_id]


def test_fail_with_a_retry_past_the_horizon_fails_for_good(
    storage: Storage, horizon: datetime
) -> None:
    queue, far, near = hold_far_and_near(storage)
    assert queue.fail(far, "boom") is True
    assert queue.fail(near, "boom") is True
    assert_failed_for_good(storage, far.task_id, LogType.FAILED)
    assert storage.tasks.get(far.task_id).error_message == "boom"
    assert_retried_before(storage, near.task_id, horizon)
    assert load_of(storage) == 0


def test_sweep_fails_a_task_whose_retry_lands_past_the_horizon_and_takes_back_the_rest(
    storage: Storage, horizon: datetime
) -> None:
    queue, far, near = hold_far_and_near(storage)
    set_worker(storage, "w1", last_heartbeat=now_of(storage) - timedelta(seconds=30))
    report = queue.sweep()
    assert report == SweepReport(["w1"], [near.task_id], [far.task_id])
    assert_failed_for_good(storage, far.task_id, LogType.RESCUED)
    assert_retried_before(storage, near.task_id, horizon)
    assert load_of(storage) == 0
    assert queue.sweep() == SweepReport([], [], [])


def test_deregister_fails_a_task_whose_retry_lands_past_the_horizon_and_requeues_the_rest(
    storage: Storage, horizon: datetime
) -> None:
    queue, far, near = hold_far_and_near(storage)
    queue.deregister_worker("w1")
    assert_failed_for_good(storage, far.task_id, LogType.RESCUED)
    assert_retried_before(storage, near.task_id, horizon)
    worker = storage.workers.get("w1")
    assert (worker.status, worker.current_load) == (WorkerStatus.OFFLINE, 0)
