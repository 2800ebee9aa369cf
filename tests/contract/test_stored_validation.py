"""The validation limits hold on every backend: the same checks guard the repositories'
parameters, what validation lets through is stored, and a refused write leaves the database as
it was.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from datetime import timedelta, timezone
from typing import Any

import pytest
from sqlalchemy import URL, text
from sqlalchemy.pool import QueuePool

from asynctaskmanager import (
    ExecutorType,
    LogType,
    MySQLConfig,
    PostgresConfig,
    Storage,
    Task,
    TaskConfig,
    TaskFilter,
    TaskLog,
    ValidationError,
    Worker,
    open_storage,
)
from asynctaskmanager.domain import limits
from tests.support.values import (
    AFTER_2038,
    BEFORE_1970,
    NAIVE,
    accepts_payload,
    nested,
)


def test_the_deepest_and_largest_accepted_json_is_stored(storage: Storage) -> None:
    """What validation lets through, every backend stores: the limits are the databases'."""
    deepest = max(d for d in range(1, limits.JSON_MAX_DEPTH + 3) if accepts_payload(nested(d)))
    leaves: tuple[Any, ...] = (1, "叶", None, [], {})
    for leaf in leaves:
        document = nested(deepest, leaf)
        if not accepts_payload(document):
            continue  # an empty container at the bottom is one level more
        task = Task("deep", document)
        storage.tasks.create(task)
        assert storage.tasks.get(task.task_id).payload == document
    overhead = len('{"blob":""}')
    largest = {"blob": "x" * (limits.JSON_MAX_BYTES - overhead)}
    assert accepts_payload(largest)
    assert not accepts_payload({"blob": largest["blob"] + "x"})
    storage.tasks.create(Task("large", largest, task_id="large"))
    assert storage.tasks.get("large").payload == largest


# --- repository parameters -------------------------------------------------------------------


def repository_calls(storage: Storage) -> list[tuple[str, Callable[[], object], str]]:
    plus8 = timezone(timedelta(hours=8))
    return [
        ("order-unknown", lambda: storage.tasks.list(order_by="payload"), "order_by"),
        (
            "order-sql",
            lambda: storage.tasks.list(order_by="created_at; DROP TABLE task"),
            "order_by",
        ),
        ("limit-zero", lambda: storage.tasks.list(limit=0), "limit"),
        ("limit-too-big", lambda: storage.tasks.list(limit=limits.PAGE_MAX + 1), "limit"),
        ("limit-bool", lambda: storage.tasks.list(limit=True), "limit"),
        ("offset-negative", lambda: storage.tasks.list(offset=-1), "offset"),
        ("descending-str", lambda: storage.tasks.list(descending="yes"), "descending"),  # type: ignore[arg-type]
        ("filter-status", lambda: storage.tasks.list(TaskFilter(status="done")), "status"),  # type: ignore[arg-type]
        ("filter-status-empty", lambda: storage.tasks.count(TaskFilter(status=[])), "status"),
        ("filter-type", lambda: storage.tasks.count(TaskFilter(task_type="")), "task_type"),
        ("filter-worker", lambda: storage.tasks.list(TaskFilter(worker_id=" w")), "worker_id"),
        (
            "filter-from-naive",
            lambda: storage.tasks.list(TaskFilter(created_from=NAIVE)),
            "created_from",
        ),
        (
            "filter-to-2038",
            lambda: storage.tasks.count(TaskFilter(created_to=AFTER_2038)),
            "created_to",
        ),
        ("filter-not-filter", lambda: storage.tasks.list({"status": "pending"}), "where"),  # type: ignore[arg-type]
        ("task-get-empty", lambda: storage.tasks.get(""), "task_id"),
        ("task-find-int", lambda: storage.tasks.find(1), "task_id"),  # type: ignore[arg-type]
        ("task-delete-long", lambda: storage.tasks.delete("x" * 65), "task_id"),
        ("config-get-space", lambda: storage.task_configs.get("a "), "task_type"),
        ("config-list-limit", lambda: storage.task_configs.list(limit=0), "limit"),
        ("config-list-enabled", lambda: storage.task_configs.list(enabled=1), "enabled"),  # type: ignore[arg-type]
        ("config-count-enabled", lambda: storage.task_configs.count(enabled="no"), "enabled"),  # type: ignore[arg-type]
        ("log-list-task", lambda: storage.task_logs.list_for_task(""), "task_id"),
        ("log-list-limit", lambda: storage.task_logs.list_for_task("t", limit=10_001), "limit"),
        ("log-count-task", lambda: storage.task_logs.count_for_task(None), "task_id"),  # type: ignore[arg-type]
        ("log-delete", lambda: storage.task_logs.delete(""), "log_id"),
        ("worker-status", lambda: storage.workers.list(status="busy"), "status"),  # type: ignore[arg-type]
        (
            "worker-before-naive",
            lambda: storage.workers.count(heartbeat_before=NAIVE),
            "heartbeat_before",
        ),
        (
            "worker-after-1969",
            lambda: storage.workers.list(heartbeat_after=BEFORE_1970.astimezone(plus8)),
            "heartbeat_after",
        ),
        ("worker-offset", lambda: storage.workers.list(offset="1"), "offset"),  # type: ignore[arg-type]
        ("worker-get", lambda: storage.workers.get(""), "worker_id"),
    ]


def snapshot(storage: Storage) -> dict[str, list[tuple[Any, ...]]]:
    keys = {
        "task": "task_id",
        "task_config": "task_type",
        "task_log": "log_id",
        "worker": "worker_id",
    }
    with storage.engine.connect() as connection:
        return {
            table: [
                tuple(row)
                for row in connection.execute(text(f"SELECT * FROM {table} ORDER BY {key}"))
            ]
            for table, key in keys.items()
        }


def seed(storage: Storage) -> None:
    storage.task_configs.create(TaskConfig("email", "Email", ExecutorType.HTTP))
    storage.tasks.create(Task("email", {"n": 1}, task_id="t1"))
    storage.task_logs.create(TaskLog("t1", LogType.CREATED, log_id="l1"))
    storage.workers.create(Worker("w1", "one", "h:1"))


def test_repository_parameters_are_validated(storage: Storage) -> None:
    seed(storage)
    before = snapshot(storage)
    for name, call, field in repository_calls(storage):
        with pytest.raises(ValidationError) as raised:
            call()
        assert raised.value.field == field, name
    assert snapshot(storage) == before


def test_rejected_writes_leave_the_database_unchanged(storage: Storage) -> None:
    seed(storage)
    before = snapshot(storage)

    # A bulk insert whose input turns bad after a whole batch was sent: nothing stays.
    def tasks() -> Iterator[Task]:
        for i in range(1_005):
            yield Task("email", task_id=f"bulk-{i}")
        yield Task("email", task_id="bad id ")

    with pytest.raises(ValidationError):
        storage.tasks.create_many(tasks())
    assert snapshot(storage) == before

    # A unit of work that wrote to three tables, then met bad input.
    with pytest.raises(ValidationError), storage.unit_of_work() as uow:
        uow.tasks.create(Task("email", task_id="t2"))
        uow.task_logs.create(TaskLog("t2", LogType.CREATED, log_id="l2"))
        uow.workers.update(Worker("w1", "renamed", "h:2"))
        uow.tasks.update(dataclasses.replace(uow.tasks.get("t1"), timeout=-5))
    assert snapshot(storage) == before

    # Repository deletes and updates refuse bad keys before touching anything.
    with pytest.raises(ValidationError):
        storage.tasks.delete("t1 ")
    with pytest.raises(ValidationError):
        storage.task_configs.delete("")
    with pytest.raises(ValidationError):
        storage.workers.delete("w1\n")
    assert snapshot(storage) == before


SESSIONS_SQL = "SELECT COUNT(*) FROM information_schema.processlist WHERE db = DATABASE()"


def small_pool(kind: type[MySQLConfig] | type[PostgresConfig], url: URL) -> Storage:
    """A storage through ``kind`` for the database ``url`` names: 3 open, 1 idle, 5 minutes."""
    config = kind(
        user=url.username or "",
        password=url.password or "",
        database=url.database or "",
        host=url.host or "localhost",
        port=url.port or kind.port,
        max_open=3,
        max_idle=1,
        max_life=timedelta(minutes=5),
    )
    return open_storage(config)


@pytest.mark.mysql
def test_mysql_config_opens_a_pool_with_its_limits(mysql_database_url: URL) -> None:
    storage = small_pool(MySQLConfig, mysql_database_url)
    pool = storage.engine.pool
    assert isinstance(pool, QueuePool)
    assert (pool.size(), pool._max_overflow, pool._recycle) == (1, 2, 300)

    def sessions() -> int:
        with storage.engine.connect() as connection:
            return int(connection.execute(text(SESSIONS_SQL)).scalar_one())

    baseline = sessions()
    held = [storage.engine.connect() for _ in range(3)]  # max_open connections at once
    try:
        for connection in held:
            assert connection.execute(text("SELECT 1")).scalar_one() == 1
    finally:
        for connection in held:
            connection.close()
    assert pool.checkedout() == 0
    # Only max_idle connections stay open while idle; closing releases every one.
    assert pool.checkedin() == 1
    storage.close()
    probe = open_storage(mysql_database_url)
    try:
        with probe.engine.connect() as connection:
            remaining = connection.execute(text(SESSIONS_SQL)).scalar_one()
        assert remaining <= baseline  # the probe's own connection replaces the closed pool's
    finally:
        probe.close()


@pytest.mark.postgres
def test_postgres_config_opens_a_pool_with_its_limits(postgres_database_url: URL) -> None:
    storage = small_pool(PostgresConfig, postgres_database_url)
    try:
        assert storage.backend == "postgresql"
        pool = storage.engine.pool
        assert isinstance(pool, QueuePool)
        assert (pool.size(), pool._max_overflow, pool._recycle) == (1, 2, 300)
        held = [storage.engine.connect() for _ in range(3)]  # max_open connections at once
        try:
            for connection in held:
                assert connection.execute(text("SHOW TimeZone")).scalar_one() == "UTC"
        finally:
            for connection in held:
                connection.close()
        assert pool.checkedin() == 1  # only max_idle stay open while idle
    finally:
        storage.close()


# --- values that get past the entities' checks are still refused as invalid values -----------


def test_values_refused_by_the_database_are_validation_errors(storage: Storage) -> None:
    worker = Worker("w1", "one", "h:1")
    object.__setattr__(worker, "worker_name", None)  # past the entity's own checks
    with pytest.raises(ValidationError) as raised:
        storage.workers.create(worker)
    assert raised.value.field == "worker_name"
    assert "refused by the database" in str(raised.value)
    assert storage.workers.count() == 0


@pytest.mark.mysql
def test_mysql_refusals_name_the_column(mysql_storage: Storage) -> None:
    long_id = Task("t")
    object.__setattr__(long_id, "task_id", "x" * (limits.ID_MAX + 1))
    huge_priority = Task("t")
    object.__setattr__(huge_priority, "priority", limits.INT_MAX + 1)
    for task, field in ((long_id, "task_id"), (huge_priority, "priority")):
        with pytest.raises(ValidationError) as raised:
            mysql_storage.tasks.create(task)
        assert raised.value.field == field
    assert mysql_storage.tasks.count() == 0
