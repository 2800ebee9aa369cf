"""The batched hot path: complete_many, fail_many and complete_many_and_claim, on every backend."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from asynctaskmanager import (
    ExecutorType,
    LogType,
    RetryStrategy,
    Storage,
    Task,
    TaskConfig,
    TaskStatus,
    ValidationError,
    Worker,
)


def setup_worker(storage: Storage, *, capacity: int = 10, **config: Any) -> None:
    config.setdefault("retry_strategy", RetryStrategy.FIXED)
    config.setdefault("retry_delay", 0)
    storage.task_configs.create(TaskConfig("job", "job tasks", ExecutorType.FUNCTION, **config))
    storage.queue.register_worker(Worker("w1", "w1", "10.0.0.1:9000", capacity=capacity))


def claimed(storage: Storage, count: int) -> list[Task]:
    for index in range(count):
        storage.queue.enqueue("job", {"n": index})
    tasks = storage.queue.claim("w1", limit=count)
    assert len(tasks) == count
    return tasks


def completions(storage: Storage, task_id: str) -> int:
    return sum(
        1 for log in storage.task_logs.list_for_task(task_id) if log.log_type is LogType.COMPLETED
    )


def test_complete_many_stores_each_result_and_frees_each_slot(storage: Storage) -> None:
    setup_worker(storage)
    tasks = claimed(storage, 4)
    results = [{"n": 0}, [1, 2], "three", None]
    assert storage.queue.complete_many(list(zip(tasks, results, strict=True))) == [True] * 4
    for task, result in zip(tasks, results, strict=True):
        stored = storage.tasks.get(task.task_id)
        assert stored.status is TaskStatus.COMPLETED
        assert stored.result == result
        assert stored.completed_at is not None
        assert completions(storage, task.task_id) == 1
    assert storage.workers.get("w1").current_load == 0


def test_complete_many_with_one_shared_result(storage: Storage) -> None:
    setup_worker(storage)
    tasks = claimed(storage, 3)
    assert storage.queue.complete_many([(task, {"ok": True}) for task in tasks]) == [True] * 3
    assert [storage.tasks.get(task.task_id).result for task in tasks] == [{"ok": True}] * 3


def test_complete_many_applies_only_to_attempts_still_held(storage: Storage) -> None:
    """A task taken back (here: cancelled) is refused; the others complete, and only their
    slots are freed."""
    setup_worker(storage)
    first, second, third = claimed(storage, 3)
    assert storage.queue.cancel(second.task_id, "operator")
    applied = storage.queue.complete_many([(first, 1), (second, 2), (third, 3)])
    assert applied == [True, False, True]
    assert storage.tasks.get(second.task_id).status is TaskStatus.CANCELLED
    assert storage.tasks.get(second.task_id).result is None
    assert completions(storage, second.task_id) == 0
    assert storage.workers.get("w1").current_load == 0
    # Twice: already completed, so nothing applies and no second log row is written.
    assert storage.queue.complete_many([(first, 1)]) == [False]
    assert completions(storage, first.task_id) == 1


def test_complete_many_refuses_bad_input_before_anything_is_written(storage: Storage) -> None:
    setup_worker(storage)
    first, second = claimed(storage, 2)
    with pytest.raises(ValidationError) as bad_result:
        storage.queue.complete_many([(first, 1), (second, {"bad": {1, 2}})])
    assert bad_result.value.field == "items[1].result"
    with pytest.raises(ValidationError) as twice:
        storage.queue.complete_many([(first, 1), (first, 2)])
    assert twice.value.field == "items[1]"
    with pytest.raises(ValidationError):
        storage.queue.complete_many([first])  # type: ignore[list-item]
    assert {storage.tasks.get(task.task_id).status for task in (first, second)} == {
        TaskStatus.RUNNING
    }
    assert storage.queue.complete_many([]) == []


def test_fail_many_retries_or_fails_each_task(storage: Storage) -> None:
    setup_worker(storage, default_max_retry=1)
    tasks = claimed(storage, 2)
    assert storage.queue.fail_many([(task, f"boom {task.task_id}") for task in tasks]) == [
        True,
        True,
    ]
    for task in tasks:
        stored = storage.tasks.get(task.task_id)
        assert stored.status is TaskStatus.PENDING
        assert stored.retry_count == 1
        assert stored.error_message == f"boom {task.task_id}"
    again = storage.queue.claim("w1", limit=2)
    assert storage.queue.fail_many([(task, "boom") for task in again], retry=True) == [True, True]
    assert {storage.tasks.get(task.task_id).status for task in tasks} == {TaskStatus.FAILED}
    assert storage.workers.get("w1").current_load == 0


def test_complete_many_and_claim_reuses_the_slots_it_frees(storage: Storage) -> None:
    """max_concurrent=2: the two completions free the two slots the claim then takes."""
    setup_worker(storage, max_concurrent=2)
    first_two = claimed(storage, 2)
    for index in range(3):
        storage.queue.enqueue("job", {"later": index})
    outcome = storage.queue.complete_many_and_claim([(task, None) for task in first_two], limit=5)
    assert outcome.completed == [True, True]
    assert len(outcome.claimed) == 2
    statuses = [storage.tasks.get(task.task_id).status for task in outcome.claimed]
    assert statuses == [TaskStatus.RUNNING, TaskStatus.RUNNING]
    assert storage.workers.get("w1").current_load == 2


def test_complete_many_and_claim_needs_one_worker(storage: Storage) -> None:
    setup_worker(storage)
    storage.queue.register_worker(Worker("w2", "w2", "10.0.0.2:9000"))
    mine = claimed(storage, 1)
    storage.queue.enqueue("job")
    theirs = storage.queue.claim("w2")
    with pytest.raises(ValidationError) as mixed:
        storage.queue.complete_many_and_claim([(mine[0], None), (theirs[0], None)])
    assert mixed.value.field == "items"


def test_count_runnable_tells_a_limit_from_an_empty_queue(storage: Storage) -> None:
    """max_concurrent=1 with one running: the claim is empty, yet two tasks are runnable."""
    setup_worker(storage, max_concurrent=1)
    claimed(storage, 1)
    storage.queue.enqueue("job")
    storage.queue.enqueue("job", delay=timedelta(hours=1))  # not due: not counted
    assert storage.queue.claim("w1") == []
    assert storage.queue.count_runnable(["job"]) == 1
    assert storage.queue.count_runnable(["other"]) == 0
    assert storage.queue.count_runnable([]) == 0
    with pytest.raises(ValidationError):
        storage.queue.count_runnable("job")
