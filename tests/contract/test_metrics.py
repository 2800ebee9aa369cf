"""The queue's numbers (collect_stats), the Prometheus collector, and the plans of the
scrape's queries: every one served by an index, none a full scan of task or task_log."""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from sqlalchemy import Connection, text

from asynctaskmanager import (
    ExecutorType,
    RetryStrategy,
    Storage,
    TaskConfig,
    TaskStatus,
    Worker,
)
from asynctaskmanager.infrastructure.schema import task_log_table as lg
from asynctaskmanager.infrastructure.schema import task_table as t
from asynctaskmanager.infrastructure.schema import worker_table as w
from asynctaskmanager.metrics import SCRAPE_QUERIES, QueueCollector, collect_stats


def _configure(storage: Storage, task_type: str) -> None:
    storage.task_configs.create(
        TaskConfig(
            task_type,
            task_type,
            ExecutorType.FUNCTION,
            retry_strategy=RetryStrategy.FIXED,
            retry_delay=0,
        )
    )


def _busy_queue(storage: Storage) -> None:
    """email: 3 pending, 1 running, 1 completed; sms: 1 pending retry, 1 failed."""
    _configure(storage, "email")
    _configure(storage, "sms")
    storage.queue.register_worker(Worker("w1", "w1", "10.0.0.1:1"))
    storage.queue.register_worker(Worker("w2", "w2", "10.0.0.2:1", supported_types=["sms"]))
    for _ in range(5):
        storage.queue.enqueue("email")
    [done] = storage.queue.claim("w1")
    storage.queue.complete(done, {"ok": True})
    storage.queue.claim("w1")
    storage.queue.enqueue("sms", max_retry=1)
    [first] = storage.queue.claim("w2")
    storage.queue.fail(first, "boom")  # retry scheduled
    [second] = storage.queue.claim("w2")
    storage.queue.fail(second, "boom again")  # out of retries: failed
    storage.queue.enqueue("sms")


def test_collect_stats_counts_the_queue(storage: Storage) -> None:
    _busy_queue(storage)
    stats = collect_stats(storage)
    assert dict(stats.tasks) == {
        ("pending", "email"): 3,
        ("running", "email"): 1,
        ("pending", "sms"): 1,
    }
    assert stats.count(TaskStatus.PENDING) == 4
    assert dict(stats.running_by_worker) == {"w1": 1}
    assert stats.workers["online"] == 2 and stats.workers["offline"] == 0
    assert stats.silent_online_workers == 0
    assert stats.oldest_due_pending_age is not None
    assert timedelta(0) <= stats.oldest_due_pending_age < timedelta(minutes=1)
    assert stats.recent_events["completed"] == 1
    assert stats.recent_events["retry_scheduled"] == 1
    assert stats.recent_events["failed"] == 1
    assert stats.recent_events["created"] == 7

    everything = collect_stats(storage, include_finished=True)
    assert everything.count(TaskStatus.COMPLETED) == 1
    assert everything.count(TaskStatus.FAILED, "sms") == 1
    assert everything.by_status["cancelled"] == 0


def test_a_task_scheduled_later_is_not_the_oldest_due(storage: Storage) -> None:
    _configure(storage, "email")
    later = datetime.now(timezone.utc) + timedelta(hours=1)
    storage.queue.enqueue("email", scheduled_at=later)
    assert collect_stats(storage).oldest_due_pending_age is None
    assert collect_stats(storage).count(TaskStatus.PENDING) == 1


def _sample(registry: CollectorRegistry, name: str, labels: dict[str, str]) -> float | None:
    return registry.get_sample_value(name, labels)


def test_the_collector_counts_events_since_it_started(persistent_storage: Storage) -> None:
    storage = persistent_storage
    _configure(storage, "email")
    storage.queue.register_worker(Worker("w1", "w1", "10.0.0.1:1"))
    storage.queue.enqueue("email")  # before the exporter started: not counted
    time.sleep(1.1)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(QueueCollector(storage, settle=timedelta(0)))
    completions = {"event": "completions", "log_type": "completed"}
    assert _sample(registry, "asynctaskmanager_task_events_total", completions) == 0
    time.sleep(1.1)  # rows are stamped in whole seconds: the next ones fall after the edge

    for _ in range(3):
        storage.queue.enqueue("email")
    for task in storage.queue.claim("w1", 4):
        storage.queue.complete(task)
    time.sleep(1.1)

    assert _sample(registry, "asynctaskmanager_task_events_total", completions) == 4
    assert _sample(registry, "asynctaskmanager_task_events_total", completions) == 4
    created = {"event": "creations", "log_type": "created"}
    assert _sample(registry, "asynctaskmanager_task_events_total", created) == 3
    assert _sample(registry, "asynctaskmanager_up", {}) == 1
    assert _sample(registry, "asynctaskmanager_workers", {"status": "online"}) == 1
    text_format = generate_latest(registry).decode()
    assert "asynctaskmanager_oldest_due_pending_age_seconds 0.0" in text_format


def test_the_collector_reports_down_when_the_database_is_unreadable(
    sqlite_storage: Storage,
) -> None:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(QueueCollector(sqlite_storage))
    with sqlite_storage.engine.begin() as connection:
        connection.execute(text("DROP TABLE worker"))
    assert _sample(registry, "asynctaskmanager_up", {}) == 0


# --- plans -----------------------------------------------------------------------------------


def _fill(storage: Storage) -> None:
    """A skewed table like a real one: mostly finished tasks, a few live ones."""
    old = datetime(2026, 1, 1, tzinfo=timezone.utc)
    statuses = ["completed"] * 1900 + ["failed"] * 60 + ["pending"] * 30 + ["running"] * 10
    tasks = [
        {
            "task_id": f"t{i:05d}",
            "task_type": f"type{i % 7}",
            "priority": i % 4,
            "status": status,
            "worker_id": "w1" if status == "running" else None,
            "created_at": old + timedelta(seconds=i),
        }
        for i, status in enumerate(statuses)
    ]
    logs = [
        {
            "log_id": f"l{i:05d}",
            "task_id": f"t{i // 3:05d}",
            "log_type": ["created", "claimed", "completed"][i % 3],
            "created_at": old + timedelta(seconds=i),
        }
        for i in range(6000)
    ]
    workers = [
        {"worker_id": f"w{i}", "worker_name": "w", "address": "a", "status": "offline"}
        for i in range(300)
    ]
    with storage.engine.begin() as connection:
        connection.execute(t.insert(), tasks)
        connection.execute(lg.insert(), logs)
        connection.execute(w.insert(), workers)
        if storage.backend == "mysql":
            connection.execute(text("ANALYZE TABLE task, task_log, worker"))
        else:
            connection.execute(text("ANALYZE"))  # SQLite and PostgreSQL


def _plan(connection: Connection, name: str) -> list[dict[str, Any]]:
    statement, params = SCRAPE_QUERIES[name]
    sql = statement.params(**params).compile(
        dialect=connection.dialect, compile_kwargs={"literal_binds": True}
    )
    prefix = "EXPLAIN QUERY PLAN " if connection.dialect.name == "sqlite" else "EXPLAIN "
    return [dict(row._mapping) for row in connection.exec_driver_sql(prefix + str(sql))]


@pytest.mark.parametrize("query", sorted(SCRAPE_QUERIES))
def test_each_scrape_query_is_served_by_an_index(persistent_storage: Storage, query: str) -> None:
    _fill(persistent_storage)
    with persistent_storage.engine.connect() as connection:
        if persistent_storage.backend == "postgresql":
            # A table this small is cheaper to scan; the question is whether an index can
            # serve the query, so scans are priced out (they remain the planner's fallback).
            connection.exec_driver_sql("SET enable_seqscan = off")
        plan = _plan(connection, query)
    if persistent_storage.backend == "postgresql":
        lines = "\n".join(str(row["QUERY PLAN"]) for row in plan)
        assert "Seq Scan" not in lines, lines
        assert "Index" in lines, lines
    elif persistent_storage.backend == "mysql":
        for row in plan:
            # 'ALL' is a full table scan, 'index' a full index scan: neither may appear.
            assert row["type"] not in ("ALL", "index"), plan
            assert row["key"], plan
    else:
        details = [row["detail"] for row in plan]
        scans = [d for d in details if d.startswith("SCAN ") and "TEMP" not in d]
        assert not scans, details
        assert any(d.startswith("SEARCH") and "INDEX" in d for d in details), details
