"""Enqueue on every backend: defaults from the type's config, refused types, bulk enqueue
in one transaction of batched statements, delays from the database's clock.
"""

from __future__ import annotations

from datetime import timedelta

import pytest

from asynctaskmanager import (
    DuplicateError,
    LogType,
    Storage,
    TaskQueue,
    TaskRequest,
    TaskStatus,
    TaskTypeDisabledError,
    UnknownTaskTypeError,
    ValidationError,
)
from tests.support.queue_helpers import (
    StatementCounter,
    configure,
    count_rows,
    logs_of,
)


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
