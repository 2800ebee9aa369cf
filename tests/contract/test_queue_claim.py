"""The claim on every backend: priority then creation order, due-ness by the database's
clock, worker capacity and per-type max_concurrent (also under a concurrent claim), supported
and enabled types, and complete_and_claim.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import timedelta

import pytest
from sqlalchemy import func, update

from asynctaskmanager import (
    CompletionAndClaim,
    ExecutorType,
    LogType,
    NotFoundError,
    RetryStrategy,
    Storage,
    Task,
    TaskConfig,
    TaskFilter,
    TaskPriority,
    TaskQueue,
    TaskRequest,
    TaskStatus,
    ValidationError,
)
from asynctaskmanager.infrastructure.schema import task_table as t
from tests.conftest import mysql_only
from tests.support.queue_helpers import (
    EngineEvents,
    assert_load_exact,
    claim_if_due,
    configure,
    load_of,
    logs_of,
    now_of,
    register,
    set_task,
)

# --- order ---------------------------------------------------------------------------------


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


# --- delayed start and the database clock --------------------------------------------------


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


# --- limits and types ----------------------------------------------------------------------


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


# --- complete_and_claim --------------------------------------------------------------------


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


# --- a concurrent claim (MySQL: the lock order of the claim) -------------------------------


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
