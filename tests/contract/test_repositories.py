"""Every repository method on every backend, and the unit of work's all-or-nothing rule."""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import text

from asynctaskmanager import (
    DuplicateError,
    ExecutorType,
    LogType,
    NotFoundError,
    RetryStrategy,
    Storage,
    StorageError,
    Task,
    TaskConfig,
    TaskFilter,
    TaskLog,
    TaskOrder,
    TaskPriority,
    TaskStatus,
    Worker,
    WorkerStatus,
    new_id,
)

UTC = timezone.utc
T0 = datetime(2024, 3, 1, 12, 0, 0, tzinfo=UTC)


def at(seconds: int) -> datetime:
    return T0 + timedelta(seconds=seconds)


def row_count(storage: Storage, table: str) -> int:
    with storage.engine.connect() as connection:
        return int(connection.execute(text(f"SELECT COUNT(*) FROM {table}")).scalar_one())


def near_now(value: datetime | None, slack: float = 5.0) -> bool:
    if value is None:
        return False
    return abs((value - datetime.now(UTC)).total_seconds()) <= slack


def full_task(task_id: str = "task-full") -> Task:
    return Task(
        task_type="email",
        payload={"to": "a@example.com", "n": [1, 2.5, None, True]},
        task_id=task_id,
        priority=TaskPriority.HIGH,
        status=TaskStatus.COMPLETED,
        result={"ok": True},
        error_message="first attempt timed out",
        worker_id="worker-1",
        retry_count=2,
        max_retry=5,
        timeout=90,
        created_at=at(0),
        scheduled_at=at(10),
        started_at=at(20),
        completed_at=at(30),
    )


# --- tasks -----------------------------------------------------------------------------------


def test_task_create_get_find_roundtrip(storage: Storage) -> None:
    task = full_task()
    storage.tasks.create(task)
    assert storage.tasks.get(task.task_id) == task
    assert storage.tasks.find(task.task_id) == task
    assert row_count(storage, "task") == 1


def test_task_created_at_defaults_to_database_clock(storage: Storage) -> None:
    task = Task("email", {"x": 1})
    assert task.created_at is None
    storage.tasks.create(task)
    stored = storage.tasks.get(task.task_id)
    assert near_now(stored.created_at)
    assert dataclasses.replace(stored, created_at=None) == task


def test_task_missing(storage: Storage) -> None:
    assert storage.tasks.find("nope") is None
    with pytest.raises(NotFoundError) as raised:
        storage.tasks.get("nope")
    assert (raised.value.entity, raised.value.key) == ("task", "nope")
    with pytest.raises(NotFoundError) as raised:
        storage.tasks.update(Task("email", task_id="nope"))
    assert (raised.value.entity, raised.value.key) == ("task", "nope")
    with pytest.raises(NotFoundError):
        storage.tasks.delete("nope")
    assert row_count(storage, "task") == 0


def test_task_duplicate(storage: Storage) -> None:
    original = full_task("dup")
    storage.tasks.create(original)
    with pytest.raises(DuplicateError) as raised:
        storage.tasks.create(Task("other", {"clobber": True}, task_id="dup"))
    assert (raised.value.entity, raised.value.key) == ("task", "dup")
    assert storage.tasks.get("dup") == original
    assert row_count(storage, "task") == 1


def test_task_keys_are_case_sensitive(storage: Storage) -> None:
    storage.tasks.create(Task("email", task_id="Task-1"))
    storage.tasks.create(Task("email", task_id="task-1"))
    assert storage.tasks.get("Task-1").task_id == "Task-1"
    assert storage.tasks.get("task-1").task_id == "task-1"
    assert storage.tasks.count(TaskFilter(task_type="email")) == 2
    assert storage.tasks.count(TaskFilter(task_type="EMAIL")) == 0


def test_task_update_writes_every_field_but_created_at(storage: Storage) -> None:
    original = Task("email", {"v": 1}, task_id="u1", created_at=at(0))
    storage.tasks.create(original)
    changed = dataclasses.replace(
        full_task("u1"),
        task_type="sms",
        status=TaskStatus.FAILED,
        payload={"v": 2},
        created_at=at(999),
    )
    storage.tasks.update(changed)
    assert storage.tasks.get("u1") == dataclasses.replace(changed, created_at=at(0))
    # Clearing optional fields writes NULLs.
    cleared = Task("email", None, task_id="u1", created_at=at(0))
    storage.tasks.update(cleared)
    assert storage.tasks.get("u1") == cleared
    # An update that changes nothing still finds its row.
    storage.tasks.update(cleared)
    assert storage.tasks.get("u1") == cleared


def test_task_delete(storage: Storage) -> None:
    storage.tasks.create(Task("email", task_id="d1"))
    storage.tasks.create(Task("email", task_id="d2"))
    storage.tasks.delete("d1")
    assert storage.tasks.find("d1") is None
    assert storage.tasks.find("d2") is not None
    with pytest.raises(NotFoundError):
        storage.tasks.delete("d1")


def test_task_create_many(storage: Storage) -> None:
    assert storage.tasks.create_many([]) == 0
    # More than one insert batch, half with explicit creation times, from a generator.
    count = 2_345

    def tasks() -> Iterator[Task]:
        for i in range(count):
            created = at(i) if i % 2 else None
            yield Task("bulk", {"i": i}, task_id=f"bulk-{i:05d}", created_at=created)

    assert storage.tasks.create_many(tasks()) == count
    assert storage.tasks.count() == count == row_count(storage, "task")
    assert storage.tasks.get("bulk-00007") == Task(
        "bulk", {"i": 7}, task_id="bulk-00007", created_at=at(7)
    )
    assert near_now(storage.tasks.get("bulk-00008").created_at)


def test_task_create_many_keeps_each_rows_timestamps(storage: Storage) -> None:
    # Rows of a batch that share a timestamp reuse its processed value; each row must
    # still get its own, in any order, in any zone.
    first = datetime(2030, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
    same_instant = first.astimezone(timezone(timedelta(hours=5, minutes=30)))
    other = first + timedelta(seconds=1)
    stamps = [first, first, other, same_instant, first, other, other]
    storage.tasks.create_many(
        Task("stamp", task_id=f"s{i}", created_at=stamp, scheduled_at=stamp)
        for i, stamp in enumerate(stamps)
    )
    for i, stamp in enumerate(stamps):
        task = storage.tasks.get(f"s{i}")
        assert task.created_at == stamp and task.scheduled_at == stamp
        assert task.created_at.tzinfo == timezone.utc


def test_task_create_many_is_all_or_nothing(storage: Storage) -> None:
    storage.tasks.create(Task("email", task_id="taken"))
    batch = [Task("email", task_id=f"new-{i}") for i in range(5)]
    batch.append(Task("email", task_id="taken"))
    with pytest.raises(DuplicateError) as raised:
        storage.tasks.create_many(batch)
    assert (raised.value.entity, raised.value.key) == ("task", "taken")
    assert row_count(storage, "task") == 1


def test_create_many_names_a_key_given_twice_and_stores_nothing(storage: Storage) -> None:
    batch = [Task("email", task_id=key) for key in ("a", "b", "c", "b", "d")]
    with pytest.raises(DuplicateError) as raised:
        storage.tasks.create_many(batch)
    assert (raised.value.entity, raised.value.key) == ("task", "b")
    logs = [TaskLog("x", LogType.INFO, log_id=key) for key in ("l1", "l2", "l1")]
    with pytest.raises(DuplicateError) as raised:
        storage.task_logs.create_many(logs)
    assert (raised.value.entity, raised.value.key) == ("task_log", "l1")
    assert row_count(storage, "task") == row_count(storage, "task_log") == 0


def test_a_failed_create_many_leaves_no_rows_in_a_unit_of_work_that_goes_on(
    storage: Storage,
) -> None:
    """SQLite keeps the rows of a batch before the failing one: only the SAVEPOINT undoes them."""
    storage.tasks.create(Task("email", task_id="taken"))
    with storage.unit_of_work() as uow:
        uow.tasks.create(Task("email", task_id="kept"))
        batch = [Task("email", task_id=f"new-{i}") for i in range(3)]
        with pytest.raises(DuplicateError) as raised:
            uow.tasks.create_many([*batch, Task("email", task_id="taken")])
        assert raised.value.key == "taken"
        uow.tasks.create_many([Task("email", task_id="after-1"), Task("email", task_id="after-2")])
        uow.commit()
    stored = {task.task_id for task in storage.tasks.list()}
    assert stored == {"taken", "kept", "after-1", "after-2"}


@pytest.mark.parametrize("savepoint", [True, False])
def test_a_failed_create_many_keeps_the_unit_of_work_s_earlier_writes(
    storage: Storage, savepoint: bool
) -> None:
    storage.tasks.create(Task("email", task_id="stored"))
    if storage.backend == "postgresql" and not savepoint:
        # The contract of savepoint=False: the caller's transaction ends with any failure.
        # On PostgreSQL it must: a failed statement leaves the transaction able only to roll
        # back. The key is still named, and nothing of the unit of work is kept.
        with storage.unit_of_work() as uow:
            uow.tasks.create(Task("email", task_id="early"))
            batch = [Task("email", task_id="new"), Task("email", task_id="stored")]
            with pytest.raises(DuplicateError) as raised:
                uow.tasks.create_many(batch, savepoint=False)
            assert raised.value.key == "stored"
            with pytest.raises(StorageError):
                uow.tasks.create(Task("email", task_id="late"))
        assert {task.task_id for task in storage.tasks.list()} == {"stored"}
        return
    with storage.unit_of_work() as uow:
        uow.tasks.create(Task("email", task_id="early"))
        uow.tasks.create(Task("email", task_id="same-transaction"))
        for taken in ("stored", "same-transaction"):
            batch = [Task("email", task_id=f"new-{taken}"), Task("email", task_id=taken)]
            with pytest.raises(DuplicateError) as raised:
                uow.tasks.create_many(batch, savepoint=savepoint)
            assert raised.value.key == taken
        uow.tasks.create(Task("email", task_id="late"))
        uow.commit()
    stored = {task.task_id for task in storage.tasks.list()}
    assert {"stored", "early", "same-transaction", "late"} <= stored
    if savepoint:  # without it, SQLite may keep the batch's rows before the failing one
        assert stored == {"stored", "early", "same-transaction", "late"}


STATUSES = list(TaskStatus)


@pytest.fixture
def listing(storage: Storage) -> list[Task]:
    """40 tasks with varied fields, inserted in random order."""
    rng = random.Random(20240301)
    tasks = []
    for i in range(40):
        started = at(100 + (i * 7) % 13) if i % 3 else None
        tasks.append(
            Task(
                task_type=("email", "sms", "push")[i % 3],
                payload={"i": i},
                task_id=f"t-{rng.randrange(10**6):06d}-{i:02d}",
                priority=TaskPriority(i % 4),
                status=STATUSES[i % len(STATUSES)],
                worker_id=None if i % 4 == 0 else f"w{i % 2}",
                # Pairs of tasks share a second, so the tie-break shows.
                created_at=at(i // 2),
                scheduled_at=at(50 - i) if i % 5 else None,
                started_at=started,
                completed_at=at(200 + i % 6) if i % 2 else None,
            )
        )
    shuffled = tasks[:]
    rng.shuffle(shuffled)
    storage.tasks.create_many(shuffled)
    return tasks


def expected_order(tasks: list[Task], order: TaskOrder, descending: bool) -> list[str]:
    """NULLs sort first ascending and last descending; task_id breaks ties the same way."""

    def key(task: Task) -> tuple[Any, ...]:
        value = getattr(task, order.value)
        return (value is not None, value if value is not None else 0, task.task_id)

    return [t.task_id for t in sorted(tasks, key=key, reverse=descending)]


def test_task_list_every_order(storage: Storage, listing: list[Task]) -> None:
    for order in TaskOrder:
        for descending in (False, True):
            got = storage.tasks.list(limit=1000, order_by=order, descending=descending)
            expected = expected_order(listing, order, descending)
            assert [t.task_id for t in got] == expected, (order, descending)
            # The string form of the order is accepted as well.
            by_name = storage.tasks.list(limit=1000, order_by=order.value, descending=descending)
            assert [t.task_id for t in by_name] == expected, (order.value, descending)


def test_task_list_default_order_and_full_objects(storage: Storage, listing: list[Task]) -> None:
    got = storage.tasks.list(limit=1000)
    assert [t.task_id for t in got] == expected_order(listing, TaskOrder.CREATED_AT, False)
    assert sorted(got, key=lambda t: t.task_id) == sorted(listing, key=lambda t: t.task_id)
    assert len(storage.tasks.list()) == len(listing)  # default limit 100 covers 40


FILTERS: list[tuple[str, TaskFilter, Callable[[Task], bool]]] = [
    ("none", TaskFilter(), lambda t: True),
    ("status", TaskFilter(status=TaskStatus.PENDING), lambda t: t.status is TaskStatus.PENDING),
    ("status-str", TaskFilter(status="running"), lambda t: t.status is TaskStatus.RUNNING),  # type: ignore[arg-type]
    (
        "statuses",
        TaskFilter(status=[TaskStatus.COMPLETED, TaskStatus.FAILED]),
        lambda t: t.status in (TaskStatus.COMPLETED, TaskStatus.FAILED),
    ),
    ("type", TaskFilter(task_type="sms"), lambda t: t.task_type == "sms"),
    ("worker", TaskFilter(worker_id="w1"), lambda t: t.worker_id == "w1"),
    (
        "from",
        TaskFilter(created_from=at(7)),
        lambda t: t.created_at is not None and t.created_at >= at(7),
    ),
    (
        "to",
        TaskFilter(created_to=at(7)),
        lambda t: t.created_at is not None and t.created_at < at(7),
    ),
    (
        "range-in-plus-08",
        TaskFilter(
            created_from=at(3).astimezone(timezone(timedelta(hours=8))),
            created_to=at(9).astimezone(timezone(timedelta(hours=-5))),
        ),
        lambda t: t.created_at is not None and at(3) <= t.created_at < at(9),
    ),
    (
        "combined",
        TaskFilter(
            status=[TaskStatus.PENDING, TaskStatus.RUNNING, TaskStatus.CANCELLED],
            task_type="email",
            worker_id="w0",
            created_from=at(2),
            created_to=at(18),
        ),
        lambda t: (
            t.status in (TaskStatus.PENDING, TaskStatus.RUNNING, TaskStatus.CANCELLED)
            and t.task_type == "email"
            and t.worker_id == "w0"
            and t.created_at is not None
            and at(2) <= t.created_at < at(18)
        ),
    ),
    ("empty-result", TaskFilter(task_type="unknown"), lambda t: False),
]


def test_task_list_and_count_every_filter(storage: Storage, listing: list[Task]) -> None:
    for name, where, matches in FILTERS:
        expected = [t for t in listing if matches(t)]
        got = storage.tasks.list(where, limit=1000)
        assert [t.task_id for t in got] == expected_order(expected, TaskOrder.CREATED_AT, False), (
            name
        )
        assert storage.tasks.count(where) == len(expected), name
    assert storage.tasks.count() == len(listing)


def test_task_list_paging(storage: Storage, listing: list[Task]) -> None:
    full = [t.task_id for t in storage.tasks.list(limit=1000, order_by=TaskOrder.PRIORITY)]
    pages: list[str] = []
    for offset in range(0, len(listing) + 7, 7):
        page = storage.tasks.list(limit=7, offset=offset, order_by=TaskOrder.PRIORITY)
        assert len(page) == min(7, max(0, len(listing) - offset))
        pages.extend(t.task_id for t in page)
    assert pages == full
    assert storage.tasks.list(limit=1, offset=len(listing)) == []
    where = TaskFilter(task_type="push")
    assert storage.tasks.list(where, limit=2, offset=1) == storage.tasks.list(where, limit=100)[1:3]


# --- task configs ----------------------------------------------------------------------------


def config(task_type: str, *, enabled: bool = True, **changes: Any) -> TaskConfig:
    values: dict[str, Any] = {
        "task_type": task_type,
        "task_name": f"name of {task_type}",
        "executor_type": ExecutorType.HTTP,
        "retry_strategy": RetryStrategy.LINEAR,
        "description": "sends things",
        "executor_config": {"url": "http://x", "headers": {"a": "b"}},
        "default_timeout": 45,
        "default_max_retry": 7,
        "retry_delay": 11,
        "backoff_rate": Decimal("1.75"),
        "max_concurrent": 3,
        "enabled": enabled,
    }
    values.update(changes)
    return TaskConfig(**values)


def strip_times(value: TaskConfig) -> TaskConfig:
    return dataclasses.replace(value, created_at=None, updated_at=None)


def test_config_create_get_roundtrip(storage: Storage) -> None:
    created = config("email", enabled=False)
    storage.task_configs.create(created)
    stored = storage.task_configs.get("email")
    assert strip_times(stored) == created
    assert stored.backoff_rate == Decimal("1.75") and isinstance(stored.backoff_rate, Decimal)
    assert stored.enabled is False
    assert near_now(stored.created_at) and near_now(stored.updated_at)
    assert storage.task_configs.find("email") == stored


def test_config_defaults_roundtrip(storage: Storage) -> None:
    minimal = TaskConfig("min", "Minimal", ExecutorType.FUNCTION)
    storage.task_configs.create(minimal)
    assert strip_times(storage.task_configs.get("min")) == minimal


def test_config_explicit_created_at_is_kept(storage: Storage) -> None:
    storage.task_configs.create(config("old", created_at=at(0)))
    assert storage.task_configs.get("old").created_at == at(0)


def test_config_missing_and_duplicate(storage: Storage) -> None:
    assert storage.task_configs.find("nope") is None
    with pytest.raises(NotFoundError) as missing:
        storage.task_configs.get("nope")
    assert (missing.value.entity, missing.value.key) == ("task_config", "nope")
    with pytest.raises(NotFoundError):
        storage.task_configs.update(config("nope"))
    with pytest.raises(NotFoundError):
        storage.task_configs.delete("nope")
    storage.task_configs.create(config("email"))
    with pytest.raises(DuplicateError) as duplicate:
        storage.task_configs.create(config("email", task_name="other"))
    assert (duplicate.value.entity, duplicate.value.key) == ("task_config", "email")
    assert storage.task_configs.get("email").task_name == "name of email"


def test_config_update_and_delete(storage: Storage) -> None:
    storage.task_configs.create(config("email", created_at=at(0)))
    changed = config(
        "email",
        enabled=False,
        task_name="renamed",
        executor_type=ExecutorType.GRPC,
        retry_strategy=RetryStrategy.FIXED,
        description=None,
        executor_config=None,
        backoff_rate=Decimal("3.5"),
        max_concurrent=1,
        created_at=at(500),
    )
    storage.task_configs.update(changed)
    stored = storage.task_configs.get("email")
    assert strip_times(stored) == strip_times(changed)
    assert stored.created_at == at(0)
    storage.task_configs.update(changed)  # no change still finds the row
    storage.task_configs.delete("email")
    assert storage.task_configs.find("email") is None


def test_config_list_count_and_enabled(storage: Storage) -> None:
    enabled = {"c-a", "c-c", "c-e", "c-g"}
    for name in ["c-g", "c-b", "c-e", "c-a", "c-d", "c-c", "c-f"]:
        storage.task_configs.create(config(name, enabled=name in enabled))
    every = sorted(enabled | {"c-b", "c-d", "c-f"})
    assert [c.task_type for c in storage.task_configs.list()] == every
    assert [c.task_type for c in storage.task_configs.list(enabled=True)] == sorted(enabled)
    assert [c.task_type for c in storage.task_configs.list(enabled=False)] == ["c-b", "c-d", "c-f"]
    assert [c.task_type for c in storage.task_configs.list(limit=3, offset=2)] == every[2:5]
    assert [c.task_type for c in storage.task_configs.list_enabled()] == sorted(enabled)
    assert all(c.enabled for c in storage.task_configs.list_enabled())
    assert storage.task_configs.count() == 7
    assert storage.task_configs.count(enabled=True) == 4
    assert storage.task_configs.count(enabled=False) == 3


# --- task logs -------------------------------------------------------------------------------


def test_log_create_get_find_update_delete(storage: Storage) -> None:
    log = TaskLog(
        "task-1",
        LogType.FAILED,
        from_status=TaskStatus.RUNNING,
        to_status=TaskStatus.FAILED,
        message="boom",
        details={"trace": ["a", "b"], "code": 7},
        log_id="log-1",
        created_at=at(5),
    )
    storage.task_logs.create(log)
    assert storage.task_logs.get("log-1") == log
    with storage.unit_of_work() as uow:
        assert uow.task_logs.find("log-1") == log
        assert uow.task_logs.find("log-x") is None
    changed = dataclasses.replace(
        log, message="changed", details=None, to_status=None, created_at=at(99)
    )
    storage.task_logs.update(changed)
    assert storage.task_logs.get("log-1") == dataclasses.replace(changed, created_at=at(5))
    storage.task_logs.delete("log-1")
    with pytest.raises(NotFoundError) as missing:
        storage.task_logs.get("log-1")
    assert (missing.value.entity, missing.value.key) == ("task_log", "log-1")
    with pytest.raises(NotFoundError):
        storage.task_logs.delete("log-1")
    with pytest.raises(NotFoundError):
        storage.task_logs.update(log)


def test_log_defaults_and_duplicate(storage: Storage) -> None:
    log = TaskLog("task-1", LogType.CREATED)
    storage.task_logs.create(log)
    stored = storage.task_logs.get(log.log_id)
    assert near_now(stored.created_at)
    assert dataclasses.replace(stored, created_at=None) == log
    with pytest.raises(DuplicateError) as raised:
        storage.task_logs.create(TaskLog("task-2", LogType.INFO, log_id=log.log_id))
    assert (raised.value.entity, raised.value.key) == ("task_log", log.log_id)
    assert storage.task_logs.get(log.log_id).task_id == "task-1"


def test_log_list_for_task_in_time_order(storage: Storage) -> None:
    # Same-second logs keep their write order through time-ordered ids.
    expected: list[TaskLog] = []
    for second in (0, 0, 0, 1, 2, 2, 5):
        expected.append(TaskLog("task-1", LogType.INFO, log_id=new_id(), created_at=at(second)))
    others = [TaskLog("task-2", LogType.INFO, created_at=at(i)) for i in range(3)]
    shuffled = expected + others
    random.Random(7).shuffle(shuffled)
    with storage.unit_of_work() as uow:
        assert uow.task_logs.create_many(shuffled) == len(shuffled)
        assert uow.task_logs.create_many([]) == 0
        uow.commit()
    assert storage.task_logs.list_for_task("task-1") == expected
    assert storage.task_logs.list_for_task("task-1", limit=3, offset=2) == expected[2:5]
    assert storage.task_logs.count_for_task("task-1") == len(expected)
    assert storage.task_logs.count_for_task("task-2") == 3
    assert storage.task_logs.list_for_task("none") == []
    assert storage.task_logs.count_for_task("none") == 0


# --- workers ---------------------------------------------------------------------------------


def test_worker_create_get_update_delete(storage: Storage) -> None:
    worker = Worker(
        "w1",
        "worker one",
        "10.0.0.1:9000",
        status=WorkerStatus.DRAINING,
        capacity=4,
        current_load=2,
        supported_types=["email", "sms"],
        last_heartbeat=at(0),
    )
    storage.workers.create(worker)
    assert storage.workers.get("w1") == worker
    assert storage.workers.find("w1") == worker
    beat = dataclasses.replace(worker, last_heartbeat=at(60), current_load=3, supported_types=[])
    storage.workers.update(beat)
    assert storage.workers.get("w1") == beat
    assert storage.workers.get("w1").supported_types == []  # none, distinct from None = all
    every = dataclasses.replace(beat, supported_types=None)
    storage.workers.update(every)
    assert storage.workers.get("w1").supported_types is None
    storage.workers.delete("w1")
    assert storage.workers.find("w1") is None


def test_worker_defaults_missing_and_duplicate(storage: Storage) -> None:
    worker = Worker("w1", "one", "host:1")
    storage.workers.create(worker)
    stored = storage.workers.get("w1")
    assert near_now(stored.last_heartbeat)
    assert dataclasses.replace(stored, last_heartbeat=None) == worker
    with pytest.raises(DuplicateError) as duplicate:
        storage.workers.create(Worker("w1", "two", "host:2"))
    assert (duplicate.value.entity, duplicate.value.key) == ("worker", "w1")
    assert storage.workers.find("nope") is None
    with pytest.raises(NotFoundError) as missing:
        storage.workers.get("nope")
    assert (missing.value.entity, missing.value.key) == ("worker", "nope")
    with pytest.raises(NotFoundError):
        storage.workers.update(Worker("nope", "n", "h:1"))
    with pytest.raises(NotFoundError):
        storage.workers.delete("nope")


@pytest.fixture
def workers(storage: Storage) -> list[Worker]:
    statuses = list(WorkerStatus)
    made = [
        Worker(
            f"w{i:02d}",
            f"worker {i}",
            f"10.0.0.{i}:9000",
            status=statuses[i % 3],
            last_heartbeat=at((i * 7) % 10),  # ties on purpose
        )
        for i in range(12)
    ]
    for worker in reversed(made):
        storage.workers.create(worker)
    return made


def worker_order(selected: list[Worker]) -> list[str]:
    return [w.worker_id for w in sorted(selected, key=lambda w: (w.last_heartbeat, w.worker_id))]


WINDOWS = [(None, None), (at(5), None), (None, at(5)), (at(8), at(3)), (at(3), at(8))]


def worker_matches(
    w: Worker, status: WorkerStatus | None, before: datetime | None, after: datetime | None
) -> bool:
    assert w.last_heartbeat is not None
    return (
        (status is None or w.status is status)
        and (before is None or w.last_heartbeat < before)  # exclusive
        and (after is None or w.last_heartbeat >= after)  # inclusive
    )


def test_worker_list_and_count_by_status_and_heartbeat(
    storage: Storage, workers: list[Worker]
) -> None:
    for status in [None, *WorkerStatus]:
        for before, after in WINDOWS:
            case = (status, before, after)
            expected = worker_order(
                [w for w in workers if worker_matches(w, status, before, after)]
            )
            got = storage.workers.list(
                status=status, heartbeat_before=before, heartbeat_after=after
            )
            assert [w.worker_id for w in got] == expected, case
            count = storage.workers.count(
                status=status, heartbeat_before=before, heartbeat_after=after
            )
            assert count == len(expected), case
    # Aware instants in any zone select the same workers.
    plus8 = timezone(timedelta(hours=8))
    assert storage.workers.count(heartbeat_before=at(5).astimezone(plus8)) == storage.workers.count(
        heartbeat_before=at(5)
    )


def test_worker_list_paging(storage: Storage, workers: list[Worker]) -> None:
    everyone = worker_order(workers)
    assert [w.worker_id for w in storage.workers.list()] == everyone
    assert [w.worker_id for w in storage.workers.list(limit=5, offset=4)] == everyone[4:9]
    assert storage.workers.list(limit=5, offset=len(workers)) == []


# --- the unit of work ------------------------------------------------------------------------


def test_unit_of_work_commits_together(storage: Storage) -> None:
    task = Task("email", task_id="uow-1")
    with storage.unit_of_work() as uow:
        uow.tasks.create(task)
        uow.task_logs.create(TaskLog(task.task_id, LogType.CREATED, log_id="uow-log"))
        uow.workers.create(Worker("uow-w", "w", "h:1"))
        # Its own writes are visible inside the transaction.
        assert dataclasses.replace(uow.tasks.get("uow-1"), created_at=None) == task
        assert uow.task_logs.count_for_task("uow-1") == 1
        uow.commit()
    assert storage.tasks.find("uow-1") is not None
    assert storage.task_logs.get("uow-log").task_id == "uow-1"
    assert storage.workers.find("uow-w") is not None


def test_unit_of_work_rolls_back_on_error(storage: Storage) -> None:
    storage.tasks.create(Task("email", task_id="existing"))

    class Boom(Exception):
        pass

    with pytest.raises(Boom), storage.unit_of_work() as uow:
        uow.tasks.create(Task("email", task_id="uow-2"))
        uow.task_logs.create(TaskLog("uow-2", LogType.CREATED, log_id="uow-log-2"))
        uow.tasks.delete("existing")
        raise Boom
    assert storage.tasks.find("uow-2") is None
    assert storage.task_logs.count_for_task("uow-2") == 0
    assert storage.tasks.find("existing") is not None
    assert row_count(storage, "task") == 1 and row_count(storage, "task_log") == 0


def test_unit_of_work_without_commit_rolls_back(storage: Storage) -> None:
    with storage.unit_of_work() as uow:
        uow.tasks.create(Task("email", task_id="uow-3"))
        uow.workers.create(Worker("uow-w3", "w", "h:1"))
    assert storage.tasks.find("uow-3") is None
    assert storage.workers.find("uow-w3") is None
    with storage.unit_of_work() as uow:
        uow.tasks.create(Task("email", task_id="uow-4"))
        uow.rollback()
        uow.commit()
    assert storage.tasks.find("uow-4") is None


def test_unit_of_work_failed_statement_rolls_back_the_rest(storage: Storage) -> None:
    storage.workers.create(Worker("taken", "w", "h:1"))
    with pytest.raises(DuplicateError), storage.unit_of_work() as uow:
        uow.tasks.create(Task("email", task_id="uow-5"))
        uow.workers.create(Worker("taken", "again", "h:2"))
        uow.commit()
    assert storage.tasks.find("uow-5") is None
    assert storage.workers.get("taken").worker_name == "w"


def test_unit_of_work_session_outside_block(storage: Storage) -> None:
    uow = storage.unit_of_work()
    with pytest.raises(StorageError):
        _ = uow.connection
    with uow:
        assert uow.connection is not None
    with pytest.raises(StorageError):
        _ = uow.connection


def test_storage_run_commits_and_returns(storage: Storage) -> None:
    def work(uow: Any) -> int:
        uow.tasks.create(Task("email", task_id="run-1"))
        uow.task_logs.create(TaskLog("run-1", LogType.CREATED))
        return int(uow.tasks.count())

    assert storage.run(work) == 1
    assert storage.task_logs.count_for_task("run-1") == 1
