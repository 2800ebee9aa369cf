"""Queue semantics (issue 3) on every backend: enqueue, claim, guarded transitions, retries,
the sweep, and the state machine.

Every timing rule is checked against the database's clock, read through the storage. Rows
are moved back in time with plain Core UPDATEs rather than by sleeping.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, TypeVar

import pytest
from sqlalchemy import event, func, select, update

from asynctaskmanager import (
    ALLOWED_TRANSITIONS,
    CompletionAndClaim,
    DuplicateError,
    ExecutorType,
    IllegalTransitionError,
    LogType,
    NotFoundError,
    QueueSettings,
    RetryPolicy,
    RetryStrategy,
    Storage,
    SweepReport,
    Task,
    TaskConfig,
    TaskFilter,
    TaskPriority,
    TaskQueue,
    TaskRequest,
    TaskStatus,
    TaskTypeDisabledError,
    UnitOfWork,
    UnknownTaskTypeError,
    ValidationError,
    Worker,
    WorkerStatus,
    can_transition,
)
from asynctaskmanager.domain.lifecycle import ensure_transition
from asynctaskmanager.infrastructure.expressions import db_now
from asynctaskmanager.infrastructure.schema import task_log_table as lg
from asynctaskmanager.infrastructure.schema import task_table as t
from asynctaskmanager.infrastructure.schema import worker_table as w
from tests.conftest import mysql_only

T = TypeVar("T")

SWEEP = QueueSettings(
    heartbeat_interval=timedelta(seconds=1), missed_heartbeats=2, retry_jitter=0.0
)
NO_JITTER = QueueSettings(retry_jitter=0.0)


# --- helpers -------------------------------------------------------------------------------


def configure(storage: Storage, task_type: str = "job", **options: Any) -> TaskConfig:
    options.setdefault("retry_strategy", RetryStrategy.FIXED)
    options.setdefault("retry_delay", 0)
    config = TaskConfig(task_type, f"{task_type} tasks", ExecutorType.FUNCTION, **options)
    storage.task_configs.create(config)
    return config


def register(
    queue: TaskQueue,
    worker_id: str = "w1",
    *,
    capacity: int = 10,
    supported_types: list[str] | None = None,
) -> Worker:
    return queue.register_worker(
        Worker(
            worker_id,
            worker_id,
            "10.0.0.1:9000",
            capacity=capacity,
            supported_types=supported_types,
        )
    )


def in_tx(storage: Storage, work: Callable[[UnitOfWork], T]) -> T:
    return storage.run(work)


def now_of(storage: Storage) -> datetime:
    return in_tx(storage, lambda uow: uow.connection.execute(select(db_now())).scalar_one())


def set_task(storage: Storage, task_id: str, **values: Any) -> None:
    in_tx(
        storage,
        lambda uow: uow.connection.execute(
            update(t).where(t.c.task_id == task_id).values(**values)
        ),
    )


def set_worker(storage: Storage, worker_id: str, **values: Any) -> None:
    in_tx(
        storage,
        lambda uow: uow.connection.execute(
            update(w).where(w.c.worker_id == worker_id).values(**values)
        ),
    )


def logs_of(
    storage: Storage, task_id: str
) -> list[tuple[LogType, TaskStatus | None, TaskStatus | None]]:
    return [
        (log.log_type, log.from_status, log.to_status)
        for log in storage.task_logs.list_for_task(task_id)
    ]


def count_rows(storage: Storage) -> tuple[int, int]:
    def work(uow: UnitOfWork) -> tuple[int, int]:
        tasks = uow.connection.execute(select(func.count()).select_from(t)).scalar_one()
        logs = uow.connection.execute(select(func.count()).select_from(lg)).scalar_one()
        return int(tasks), int(logs)

    return in_tx(storage, work)


def load_of(storage: Storage, worker_id: str = "w1") -> int:
    return storage.workers.get(worker_id).current_load


def running_of(storage: Storage, worker_id: str = "w1") -> int:
    def work(uow: UnitOfWork) -> int:
        query = select(func.count()).where(
            t.c.worker_id == worker_id, t.c.status == TaskStatus.RUNNING.value
        )
        return int(uow.connection.execute(query).scalar_one())

    return in_tx(storage, work)


def assert_load_exact(storage: Storage, worker_id: str = "w1") -> None:
    assert load_of(storage, worker_id) == running_of(storage, worker_id)


def claim_if_due(storage: Storage, queue: TaskQueue, worker_id: str, due: datetime) -> list[str]:
    """Claim, and check that nothing was claimed while the database clock was before ``due``.

    Robust on a stalled machine: if ``due`` passed meanwhile, the claim may legitimately
    return the task, so only the ordering of the database clock decides.
    """
    claimed = [task.task_id for task in queue.claim(worker_id, limit=5)]
    if now_of(storage) < due:
        assert claimed == [], "a task was claimed before it was due by the database's clock"
    return claimed


def keep_alive(queue: TaskQueue, *worker_ids: str) -> None:
    """A heartbeat right before a sweep, so that a slow machine cannot make them look dead."""
    for worker_id in worker_ids:
        queue.heartbeat(worker_id)


class EngineEvents:
    """The calls of one engine event while the block runs (``commit`` counts commits on
    every backend: pysqlite's COMMIT is no cursor statement)."""

    def __init__(self, storage: Storage, name: str) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self._engine = storage.engine
        self._name = name

    def __enter__(self) -> EngineEvents:
        event.listen(self._engine, self._name, self._record)
        return self

    def __exit__(self, *exc: object) -> None:
        event.remove(self._engine, self._name, self._record)

    def _record(self, *args: Any) -> None:
        self.calls.append(args)


class StatementCounter(EngineEvents):
    def __init__(self, storage: Storage) -> None:
        super().__init__(storage, "before_cursor_execute")

    @property
    def statements(self) -> list[str]:
        return [call[2] for call in self.calls]


@pytest.fixture
def queue(storage: Storage) -> TaskQueue:
    return TaskQueue(storage.runner, NO_JITTER)


# --- the state machine ---------------------------------------------------------------------


def test_allowed_transitions_table() -> None:
    s = TaskStatus
    expected = {
        s.PENDING: {s.RUNNING, s.CANCELLED},
        s.RUNNING: {s.COMPLETED, s.FAILED, s.PENDING, s.CANCELLED},
        s.COMPLETED: set(),
        s.FAILED: set(),
        s.CANCELLED: set(),
    }
    assert expected == ALLOWED_TRANSITIONS
    for source in TaskStatus:
        for target in TaskStatus:
            allowed = target in ALLOWED_TRANSITIONS[source]
            assert can_transition(source, target) is allowed
            if allowed:
                ensure_transition("x", source, target)
            else:
                with pytest.raises(
                    IllegalTransitionError, match=f"{source.value} -> {target.value}"
                ):
                    ensure_transition("x", source, target)
    assert all(not ALLOWED_TRANSITIONS[status] for status in TaskStatus if status.is_final)


@pytest.mark.parametrize(
    ("strategy", "expected"),
    [
        (RetryStrategy.FIXED, [4, 4, 4, 4]),
        (RetryStrategy.LINEAR, [4, 8, 12, 16]),
        (RetryStrategy.EXPONENTIAL, [4, 12, 36, 50]),  # capped at 50
    ],
)
def test_retry_policy_delays(strategy: RetryStrategy, expected: list[int]) -> None:
    policy = RetryPolicy(strategy, 4, Decimal("3"), max_delay=50)
    assert [policy.delay_seconds(attempt) for attempt in (1, 2, 3, 4)] == expected
    jittered = RetryPolicy(strategy, 4, Decimal("3"), max_delay=50, jitter=0.5)
    for attempt, full in zip((1, 2, 3, 4), expected, strict=True):
        assert all(full / 2 <= jittered.delay_seconds(attempt) <= full for _ in range(50))


# --- enqueue -------------------------------------------------------------------------------


def test_enqueue_takes_defaults_from_config(storage: Storage, queue: TaskQueue) -> None:
    configure(storage, default_timeout=77, default_max_retry=5)
    task = queue.enqueue("job", {"n": 1})
    assert (task.timeout, task.max_retry) == (77, 5)
    stored = storage.tasks.get(task.task_id)
    assert (stored.timeout, stored.max_retry, stored.status) == (77, 5, TaskStatus.PENDING)
    explicit = queue.enqueue("job", timeout=9, max_retry=0)
    stored = storage.tasks.get(explicit.task_id)
    assert (stored.timeout, stored.max_retry) == (9, 0)
    assert logs_of(storage, task.task_id) == [(LogType.CREATED, None, TaskStatus.PENDING)]


def test_enqueue_refuses_disabled_and_unknown_types(storage: Storage, queue: TaskQueue) -> None:
    configure(storage, "on")
    configure(storage, "off", enabled=False)
    with pytest.raises(TaskTypeDisabledError):
        queue.enqueue("off")
    with pytest.raises(UnknownTaskTypeError):
        queue.enqueue("nobody-configured-me")
    with pytest.raises(TaskTypeDisabledError):
        queue.enqueue_many([TaskRequest("on"), TaskRequest("on"), TaskRequest("off")])
    with pytest.raises(UnknownTaskTypeError):
        queue.enqueue_many([TaskRequest("on"), TaskRequest("ghost")])
    assert count_rows(storage) == (0, 0)


def test_bulk_enqueue_is_one_transaction(storage: Storage, queue: TaskQueue) -> None:
    configure(storage)
    existing = queue.enqueue("job")
    # Past the insert batch size: the duplicate lands in a later statement than the first
    # thousand rows, so only a rollback of the whole transaction leaves nothing behind.
    batch = [TaskRequest("job", {"i": i}) for i in range(1400)]
    batch.append(TaskRequest("job", task_id=existing.task_id))
    with pytest.raises(DuplicateError) as raised:
        queue.enqueue_many(batch)
    assert raised.value.key == existing.task_id
    assert count_rows(storage) == (1, 1)
    twice = [TaskRequest("job", task_id=key) for key in ("t-1", "t-2", "t-1")]
    with pytest.raises(DuplicateError) as raised:
        queue.enqueue_many(twice)
    assert raised.value.key == "t-1"
    assert count_rows(storage) == (1, 1)


def test_bulk_enqueue_uses_batched_statements(storage: Storage, queue: TaskQueue) -> None:
    configure(storage)
    with StatementCounter(storage) as counter:
        tasks = queue.enqueue_many(TaskRequest("job", {"i": i}) for i in range(2500))
    assert len(tasks) == 2500
    assert count_rows(storage) == (2500, 2500)
    assert len(counter.statements) <= 12, counter.statements


def test_same_priority_tasks_come_out_in_creation_order(storage: Storage, queue: TaskQueue) -> None:
    configure(storage, max_concurrent=1000)
    register(queue, capacity=1000)
    first = queue.enqueue_many(TaskRequest("job", {"i": i}) for i in range(30))
    second = queue.enqueue_many(TaskRequest("job", {"i": i}) for i in range(30, 40))
    # Same second on every backend (TIMESTAMP keeps whole seconds): the ids break the tie.
    created = [task.task_id for task in first + second]
    claimed = [queue.claim("w1")[0].task_id for _ in range(20)]
    claimed += [task.task_id for task in queue.claim("w1", limit=20)]
    assert claimed == created
    assert queue.claim("w1") == []


def test_higher_priority_first(storage: Storage, queue: TaskQueue) -> None:
    configure(storage)
    register(queue)
    low = queue.enqueue("job", priority=TaskPriority.LOW)
    normal = queue.enqueue("job")
    critical = queue.enqueue("job", priority=TaskPriority.CRITICAL)
    high = queue.enqueue("job", priority=TaskPriority.HIGH)
    claimed = [queue.claim("w1")[0].task_id for _ in range(4)]
    assert claimed == [critical.task_id, high.task_id, normal.task_id, low.task_id]


# --- delayed start and the database clock -------------------------------------------------


def test_delayed_start_by_scheduled_at(storage: Storage, queue: TaskQueue) -> None:
    configure(storage)
    register(queue)
    now = now_of(storage)
    future = queue.enqueue("job", scheduled_at=now + timedelta(hours=1))
    past = queue.enqueue("job", scheduled_at=now - timedelta(seconds=1))
    [claimed] = queue.claim("w1", limit=5)
    assert claimed.task_id == past.task_id
    assert queue.claim("w1", limit=5) == []
    set_task(storage, future.task_id, scheduled_at=now - timedelta(seconds=1))
    assert [task.task_id for task in queue.claim("w1")] == [future.task_id]


def test_due_ness_is_judged_by_the_database_clock(storage: Storage, queue: TaskQueue) -> None:
    configure(storage)
    register(queue)
    db = now_of(storage)
    delayed = queue.enqueue("job", delay=timedelta(seconds=30))
    stored = storage.tasks.get(delayed.task_id)
    assert stored.scheduled_at is not None
    # scheduled_at comes from the database's clock at enqueue time, not the client's.
    assert (
        db + timedelta(seconds=30) <= stored.scheduled_at <= now_of(storage) + timedelta(seconds=30)
    )
    # Two seconds ahead of the database's clock: not claimable until the database says so.
    soon = queue.enqueue("job", scheduled_at=now_of(storage) + timedelta(seconds=2))
    assert soon.scheduled_at is not None
    early = claim_if_due(storage, queue, "w1", soon.scheduled_at)
    if not early:
        immediate = queue.enqueue("job", delay=timedelta(0))
        assert [task.task_id for task in queue.claim("w1", limit=5)] in (
            [immediate.task_id],
            [soon.task_id, immediate.task_id],  # the machine stalled past the 2 s
        )
    assert storage.tasks.get(delayed.task_id).status is TaskStatus.PENDING


# --- claim ---------------------------------------------------------------------------------


def test_claim_sets_running_and_writes_one_log_per_task(storage: Storage, queue: TaskQueue) -> None:
    configure(storage)
    register(queue)
    tasks = queue.enqueue_many(TaskRequest("job", {"i": i}) for i in range(3))
    before = now_of(storage)
    claimed = queue.claim("w1", limit=5)
    after = now_of(storage)
    assert [task.task_id for task in claimed] == [task.task_id for task in tasks]
    for task in claimed:
        stored = storage.tasks.get(task.task_id)
        assert stored.status is TaskStatus.RUNNING and task.status is TaskStatus.RUNNING
        assert stored.worker_id == task.worker_id == "w1"
        assert stored.started_at is not None and before <= stored.started_at <= after
        assert stored.started_at == task.started_at
        assert logs_of(storage, task.task_id) == [
            (LogType.CREATED, None, TaskStatus.PENDING),
            (LogType.CLAIMED, TaskStatus.PENDING, TaskStatus.RUNNING),
        ]
    assert load_of(storage) == 3
    assert_load_exact(storage)


def test_claim_respects_worker_capacity(storage: Storage, queue: TaskQueue) -> None:
    configure(storage)
    register(queue, capacity=3)
    queue.enqueue_many(TaskRequest("job") for _ in range(10))
    first = queue.claim("w1", limit=10)
    assert len(first) == 3
    assert queue.claim("w1", limit=10) == []
    assert load_of(storage) == 3
    assert queue.complete(first[0])
    assert len(queue.claim("w1", limit=10)) == 1
    assert load_of(storage) == 3
    assert_load_exact(storage)


def test_claim_respects_max_concurrent_across_workers(storage: Storage, queue: TaskQueue) -> None:
    configure(storage, max_concurrent=2)
    register(queue, "w1")
    register(queue, "w2")
    queue.enqueue_many(TaskRequest("job") for _ in range(6))
    assert len(queue.claim("w1", limit=10)) == 2
    assert queue.claim("w2", limit=10) == []
    assert queue.claim("w1", limit=10) == []
    [running, _] = storage.tasks.list(TaskFilter(status=TaskStatus.RUNNING))
    assert queue.complete(running)
    assert len(queue.claim("w2", limit=10)) == 1
    assert load_of(storage, "w1") == 1 and load_of(storage, "w2") == 1


def test_complete_and_claim_is_one_transaction_that_frees_and_reuses_the_slot(
    storage: Storage, queue: TaskQueue
) -> None:
    """max_concurrent=1: the next task of the type is claimable only because the same
    transaction's completion freed the type's one slot."""
    configure(storage, max_concurrent=1)
    register(queue, "w1")
    first, second, third = queue.enqueue_many(TaskRequest("job", {"i": i}) for i in range(3))
    [running] = queue.claim("w1")
    assert running.task_id == first.task_id
    with EngineEvents(storage, "commit") as commits:
        completed, claimed = queue.complete_and_claim(running, {"ok": True})
    assert len(commits.calls) == 1
    assert completed
    assert [task.task_id for task in claimed] == [second.task_id]
    assert claimed[0].status is TaskStatus.RUNNING and claimed[0].worker_id == "w1"
    done = storage.tasks.get(first.task_id)
    assert (done.status, done.result) == (TaskStatus.COMPLETED, {"ok": True})
    assert logs_of(storage, first.task_id)[-1] == (
        LogType.COMPLETED,
        TaskStatus.RUNNING,
        TaskStatus.COMPLETED,
    )
    assert load_of(storage, "w1") == 1
    assert_load_exact(storage)
    completed, claimed = queue.complete_and_claim(claimed[0], limit=5)
    assert completed and [task.task_id for task in claimed] == [third.task_id]
    completed, claimed = queue.complete_and_claim(claimed[0])
    assert (completed, claimed) == (True, [])
    assert load_of(storage, "w1") == 0


def test_complete_and_claim_still_claims_when_the_completion_no_longer_applies(
    storage: Storage, queue: TaskQueue
) -> None:
    configure(storage)
    register(queue, "w1")
    first, second = queue.enqueue_many(TaskRequest("job") for _ in range(2))
    [running] = queue.claim("w1")
    assert queue.cancel(running.task_id, "operator")
    completed, claimed = queue.complete_and_claim(running, {"late": True})
    assert not completed
    assert [task.task_id for task in claimed] == [second.task_id]
    assert storage.tasks.get(first.task_id).status is TaskStatus.CANCELLED
    assert_load_exact(storage)


def test_complete_and_claim_is_all_or_nothing(storage: Storage, queue: TaskQueue) -> None:
    configure(storage)
    register(queue, "w1")
    queue.enqueue_many(TaskRequest("job") for _ in range(2))
    [running] = queue.claim("w1")
    storage.workers.delete("w1")  # the claim half fails: the completion must not stay
    with pytest.raises(NotFoundError):
        queue.complete_and_claim(running)
    assert storage.tasks.get(running.task_id).status is TaskStatus.RUNNING
    with pytest.raises(ValidationError) as raised:
        queue.complete_and_claim(running, limit=0)
    assert raised.value.field == "limit"


def test_a_full_type_does_not_starve_other_types(storage: Storage, queue: TaskQueue) -> None:
    """Tasks of a type at its max_concurrent are not runnable: they must not hide the
    runnable tasks of other types queued behind them."""
    configure(storage, "busy", max_concurrent=1)
    configure(storage, "free")
    register(queue, capacity=10)
    busy = queue.enqueue_many(TaskRequest("busy", priority=TaskPriority.CRITICAL) for _ in range(5))
    free = queue.enqueue_many(TaskRequest("free", priority=TaskPriority.LOW) for _ in range(3))
    claimed = queue.claim("w1", limit=4)
    assert [task.task_id for task in claimed] == [busy[0].task_id] + [task.task_id for task in free]
    assert queue.claim("w1", limit=4) == []
    assert_load_exact(storage)


def test_claim_respects_supported_and_enabled_types(storage: Storage, queue: TaskQueue) -> None:
    configure(storage, "a")
    configure(storage, "b")
    register(queue, "only-b", supported_types=["b"])
    register(queue, "none", supported_types=[])
    register(queue, "any")
    a = queue.enqueue("a", priority=TaskPriority.HIGH)
    b = queue.enqueue("b")
    assert queue.claim("none", limit=5) == []
    assert [task.task_id for task in queue.claim("only-b", limit=5)] == [b.task_id]
    storage.task_configs.update(
        TaskConfig("a", "a tasks", ExecutorType.FUNCTION, RetryStrategy.FIXED, enabled=False)
    )
    assert queue.claim("any", limit=5) == []
    assert storage.tasks.get(a.task_id).status is TaskStatus.PENDING


def test_claim_by_unknown_or_offline_worker(storage: Storage, queue: TaskQueue) -> None:
    configure(storage)
    queue.enqueue("job")
    with pytest.raises(NotFoundError):
        queue.claim("ghost")
    register(queue)
    queue.deregister_worker("w1")
    assert queue.claim("w1") == []


# --- guarded transitions -------------------------------------------------------------------


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


# --- workers, heartbeats and the sweep -----------------------------------------------------


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


@pytest.mark.parametrize(
    ("field", "options"),
    [
        ("heartbeat_interval", {"heartbeat_interval": timedelta(0)}),
        ("missed_heartbeats", {"missed_heartbeats": 0}),
        ("max_retry_delay", {"max_retry_delay": -1}),
        ("retry_jitter", {"retry_jitter": 1.5}),
        ("timeout_grace", {"timeout_grace": 5}),
    ],
)
def test_queue_settings_are_validated(field: str, options: dict[str, Any]) -> None:
    with pytest.raises(ValidationError) as caught:
        QueueSettings(**options)
    assert caught.value.field == field


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

    def run(work: Callable[[UnitOfWork], T], *, read_only: bool = False) -> T:
        nonlocal calls
        calls += 1
        if calls == 2:  # after the sweep's first transaction (finding the dead) ...
            original(
                lambda uow: uow.connection.execute(
                    update(w).where(w.c.worker_id == "w1").values(last_heartbeat=db_now())
                )
            )
        return original(work, read_only=read_only)

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


def _while_another_claim_checks_the_limit(
    storage: Storage, task_id: str, action: Callable[[], object]
) -> None:
    """Runs ``action`` in a thread while another transaction has marked ``task_id`` running
    for w2 and holds the 'job' config row (as a claim checking the limit does); checks that
    ``action`` waits for that row, then commits the other transaction."""
    with storage.engine.connect() as other:
        other.execute(
            update(t)
            .where(t.c.task_id == task_id)
            .values(status=TaskStatus.RUNNING.value, worker_id="w2", started_at=func.now())
        )
        other.exec_driver_sql("SELECT * FROM task_config WHERE task_type = 'job' FOR UPDATE")
        waiter = threading.Thread(target=action)
        waiter.start()
        waiter.join(timeout=1.0)
        assert waiter.is_alive()  # waiting for the config row, its own task already marked
        other.commit()
    waiter.join(timeout=30)
    assert not waiter.is_alive()


@mysql_only
def test_claim_rechecks_max_concurrent_after_a_concurrent_claim_commits(
    mysql_storage: Storage,
) -> None:
    """Another claimer has marked a task running and holds the type's config row (it is
    checking the limit): ours counts without it, takes a task, then waits for the row. When
    the other commits, ours finds the type over its limit, rolls back, counts again under
    the lock and takes nothing."""
    storage, queue = mysql_storage, mysql_storage.queue
    configure(storage, max_concurrent=1)
    register(queue, "w1")
    register(queue, "w2")
    first, _ = queue.enqueue_many(TaskRequest("job") for _ in range(2))
    claimed: list[list[Task]] = []
    _while_another_claim_checks_the_limit(
        storage, first.task_id, lambda: claimed.append(queue.claim("w1"))
    )
    assert claimed == [[]]
    running = storage.tasks.list(TaskFilter(status=TaskStatus.RUNNING))
    assert [task.task_id for task in running] == [first.task_id]
    assert load_of(storage, "w1") == 0
    assert storage.task_logs.count_for_task(running[0].task_id) == 1  # created only


@mysql_only
def test_complete_and_claim_over_a_limit_commits_the_completion_on_its_own(
    mysql_storage: Storage,
) -> None:
    """As in the test above, a concurrent claim of the limited type commits while ours waits
    for the config row. Ours must not lose its completion to the rollback: it commits the
    completion alone, then claims under the lock and takes nothing."""
    storage, queue = mysql_storage, mysql_storage.queue
    configure(storage, max_concurrent=1)
    configure(storage, "other", max_concurrent=10)
    register(queue, "w1")
    register(queue, "w2")
    [held] = queue.enqueue_many([TaskRequest("other")])
    [held] = queue.claim("w1")
    first, _ = queue.enqueue_many(TaskRequest("job") for _ in range(2))
    outcome: list[CompletionAndClaim] = []
    with EngineEvents(storage, "commit") as commits:
        _while_another_claim_checks_the_limit(
            storage, first.task_id, lambda: outcome.append(queue.complete_and_claim(held))
        )
    assert outcome == [(True, [])]
    assert storage.tasks.get(held.task_id).status is TaskStatus.COMPLETED
    assert len(commits.calls) == 3  # the other's, our completion's, our claim's
    assert load_of(storage, "w1") == 0


def test_enqueue_with_a_delay_returns_the_stored_whole_second(
    storage: Storage, queue: TaskQueue
) -> None:
    configure(storage)
    task = queue.enqueue("job", delay=timedelta(seconds=30, microseconds=600_000))
    assert task.scheduled_at is not None and task.scheduled_at.microsecond == 0
    assert storage.tasks.get(task.task_id).scheduled_at == task.scheduled_at


def test_enqueue_checks_a_payload_changed_after_its_request_was_made(
    storage: Storage, queue: TaskQueue
) -> None:
    configure(storage)
    request = TaskRequest("job", {"n": 1})
    request.payload["bad"] = float("nan")
    with pytest.raises(ValidationError) as refused:
        queue.enqueue_many([request])
    assert refused.value.field == "payload"
    assert storage.tasks.count() == 0
