"""The queue's numbers, from Python (:func:`collect_stats`) and for Prometheus
(:class:`QueueCollector`, served by ``asynctaskmanager metrics --port N``).

Every query here is served by an index, so that a scrape stays cheap at 10 million tasks
(``tests/test_metrics.py`` asserts each plan on SQLite and MySQL/MariaDB):

- tasks are counted for the live statuses only (pending, running: a range of the status
  index). Finished tasks are what the table fills up with; counting them reads millions of
  index entries, so :func:`collect_stats` does it only when asked (``include_finished``),
  and the exporter never does. Their rates come from the event counters below.
- the oldest due pending task: per priority, the first due row of ``ix_task_claim``
  (status, priority, created_at) in created_at order; four short index walks.
- workers: a range of the worker status index.
- events (completions, failures, retries, rescues...): task_log rows counted by log_type
  over a range of its created_at index, never over all of it. An index on log_type would
  still read every matching entry, 100 million at scale. :func:`collect_stats` counts a
  recent window; the exporter keeps true counters by counting, at each scrape, only the rows
  written since the previous one (see :class:`QueueCollector`).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import ClauseElement, Connection, bindparam, func, or_, select

from asynctaskmanager.domain.enums import LogType, TaskPriority, TaskStatus, WorkerStatus
from asynctaskmanager.errors import AsyncTaskManagerError
from asynctaskmanager.infrastructure.schema import task_log_table as lg
from asynctaskmanager.infrastructure.schema import task_table as t
from asynctaskmanager.infrastructure.schema import worker_table as w

if TYPE_CHECKING:
    from asynctaskmanager.storage import Storage

LIVE_STATUSES = (TaskStatus.PENDING.value, TaskStatus.RUNNING.value)
FINAL_STATUSES = (
    TaskStatus.COMPLETED.value,
    TaskStatus.FAILED.value,
    TaskStatus.CANCELLED.value,
)
DEFAULT_WINDOW = timedelta(minutes=5)
# A log row is counted once it is this old: a transaction may commit a row stamped a little
# earlier, and a scrape must not pass over it for good.
DEFAULT_SETTLE = timedelta(seconds=30)

# The event counters the exporter names, by log type.
EVENT_COUNTERS = {
    LogType.COMPLETED.value: "completions",
    LogType.FAILED.value: "failures",
    LogType.RETRY_SCHEDULED.value: "retries",
    LogType.RESCUED.value: "rescues",
    LogType.CANCELLED.value: "cancellations",
    LogType.CREATED.value: "creations",
    LogType.CLAIMED.value: "claims",
}

_DB_NOW = select(func.current_timestamp(type_=t.c.created_at.type))

TASKS_BY_STATUS_AND_TYPE = (
    select(t.c.status, t.c.task_type, func.count())
    .where(t.c.status.in_(bindparam("p_statuses", expanding=True)))
    .group_by(t.c.status, t.c.task_type)
)
OLDEST_DUE_PENDING_OF_PRIORITY = (
    select(t.c.created_at)
    .where(
        t.c.status == TaskStatus.PENDING.value,
        t.c.priority == bindparam("p_priority"),
        or_(t.c.scheduled_at.is_(None), t.c.scheduled_at <= func.current_timestamp()),
    )
    .order_by(t.c.created_at)
    .limit(1)
)
# Grouped by an expression, not the column: SQLite would otherwise walk the whole worker_id
# index for its order instead of searching the status index.
_WORKER_KEY = func.coalesce(t.c.worker_id, "")
RUNNING_BY_WORKER = (
    select(_WORKER_KEY, func.count())
    .where(t.c.status == TaskStatus.RUNNING.value)
    .group_by(_WORKER_KEY)
)
WORKERS_BY_STATUS = (
    select(w.c.status, func.count())
    .where(w.c.status.in_([status.value for status in WorkerStatus]))
    .group_by(w.c.status)
)
# Online by their row, silent longer than dead_after: dead, until a sweep marks them so.
SILENT_ONLINE_WORKERS = select(func.count()).where(
    w.c.status == WorkerStatus.ONLINE.value, w.c.last_heartbeat < bindparam("p_cutoff")
)
EVENTS_BETWEEN = (
    select(lg.c.log_type, func.count())
    .where(lg.c.created_at >= bindparam("p_from"), lg.c.created_at < bindparam("p_to"))
    .group_by(lg.c.log_type)
)

_SAMPLE_TIME = datetime(2000, 1, 1, tzinfo=timezone.utc)
# What a scrape runs, with sample parameters: the plan test walks this list.
SCRAPE_QUERIES: dict[str, tuple[ClauseElement, dict[str, Any]]] = {
    "tasks": (TASKS_BY_STATUS_AND_TYPE, {"p_statuses": list(LIVE_STATUSES)}),
    "oldest_due_pending": (OLDEST_DUE_PENDING_OF_PRIORITY, {"p_priority": 1}),
    "running_by_worker": (RUNNING_BY_WORKER, {}),
    "workers": (WORKERS_BY_STATUS, {}),
    "silent_online_workers": (SILENT_ONLINE_WORKERS, {"p_cutoff": _SAMPLE_TIME}),
    "events": (EVENTS_BETWEEN, {"p_from": _SAMPLE_TIME, "p_to": _SAMPLE_TIME + timedelta(days=1)}),
}


@dataclass(frozen=True)
class QueueStats:
    """One reading of the queue, by the database's clock (``read_at``).

    ``tasks`` maps (status, task_type) to a count: pending and running always, the final
    statuses too when collected with ``include_finished``. ``recent_events`` counts task_log
    rows by log_type written in the last ``window``.
    """

    read_at: datetime
    tasks: Mapping[tuple[str, str], int]
    oldest_due_pending_age: timedelta | None
    running_by_worker: Mapping[str, int]
    workers: Mapping[str, int]
    silent_online_workers: int
    recent_events: Mapping[str, int]
    window: timedelta
    include_finished: bool = False
    by_status: Mapping[str, int] = field(default_factory=dict)

    def count(self, status: TaskStatus | str, task_type: str | None = None) -> int:
        wanted = TaskStatus(status).value
        return sum(
            n
            for (found, kind), n in self.tasks.items()
            if found == wanted and task_type in (None, kind)
        )

    def as_dict(self) -> dict[str, Any]:
        """Plain data for ``--json``."""
        age = self.oldest_due_pending_age
        return {
            "read_at": self.read_at.isoformat(),
            "tasks": [
                {"status": status, "task_type": kind, "count": n}
                for (status, kind), n in sorted(self.tasks.items())
            ],
            "tasks_by_status": dict(self.by_status),
            "include_finished": self.include_finished,
            "oldest_due_pending_age_seconds": None if age is None else age.total_seconds(),
            "running_by_worker": dict(self.running_by_worker),
            "workers": dict(self.workers),
            "silent_online_workers": self.silent_online_workers,
            "recent_events": dict(self.recent_events),
            "window_seconds": self.window.total_seconds(),
        }


def collect_stats(
    storage: Storage,
    *,
    window: timedelta = DEFAULT_WINDOW,
    include_finished: bool = False,
) -> QueueStats:
    """Read the queue's numbers in one read-only transaction (see the module's docstring for
    what each costs; ``include_finished`` reads every finished task's index entry)."""
    dead_after = storage.queue.settings.dead_after
    statuses = list(LIVE_STATUSES + (FINAL_STATUSES if include_finished else ()))

    def read(uow: Any) -> QueueStats:
        connection: Connection = uow.connection
        now: datetime = connection.execute(_DB_NOW).scalar_one()
        tasks = {
            (status, kind): n
            for status, kind, n in connection.execute(
                TASKS_BY_STATUS_AND_TYPE, {"p_statuses": statuses}
            )
        }
        by_status = dict.fromkeys(statuses, 0)
        for (status, _kind), n in tasks.items():
            by_status[status] += n
        oldest = oldest_due_pending(connection)
        return QueueStats(
            read_at=now,
            tasks=tasks,
            oldest_due_pending_age=None if oldest is None else max(now - oldest, timedelta(0)),
            running_by_worker={
                worker or "(none)": n for worker, n in connection.execute(RUNNING_BY_WORKER)
            },
            workers=_workers(connection),
            silent_online_workers=connection.execute(
                SILENT_ONLINE_WORKERS, {"p_cutoff": now - dead_after}
            ).scalar_one(),
            recent_events=events_between(connection, now - window, now + timedelta(seconds=1)),
            window=window,
            include_finished=include_finished,
            by_status=by_status,
        )

    return storage.run(read, read_only=True)


def oldest_due_pending(connection: Connection) -> datetime | None:
    """The created_at of the oldest pending task that is due, or None."""
    found = [
        connection.execute(OLDEST_DUE_PENDING_OF_PRIORITY, {"p_priority": p.value}).scalar()
        for p in TaskPriority
    ]
    present = [value for value in found if value is not None]
    return min(present) if present else None


def events_between(connection: Connection, start: datetime, end: datetime) -> dict[str, int]:
    """task_log rows by log_type with start <= created_at < end."""
    return {
        kind: n for kind, n in connection.execute(EVENTS_BETWEEN, {"p_from": start, "p_to": end})
    }


def _workers(connection: Connection) -> dict[str, int]:
    counted = dict.fromkeys((status.value for status in WorkerStatus), 0)
    counted.update({status: n for status, n in connection.execute(WORKERS_BY_STATUS)})
    return counted


class QueueCollector(Collector):
    """A prometheus_client collector that reads the database at each scrape.

    The event counters are true counters: they start at zero when the exporter starts, and
    each scrape adds the task_log rows stamped since the previous scrape's edge, up to
    ``settle`` ago (a row is counted once it is that old, so that one committed late is not
    missed). Graph them with ``rate()`` or ``increase()``; a restart of the exporter is a
    counter reset, which those functions handle.
    """

    def __init__(self, storage: Storage, *, settle: timedelta = DEFAULT_SETTLE) -> None:
        self._storage = storage
        self._settle = settle
        self._lock = threading.Lock()
        self._counted_until: datetime | None = None
        self._events: dict[str, int] = dict.fromkeys(EVENT_COUNTERS, 0)

    def collect(self) -> Iterable[Any]:
        up = GaugeMetricFamily(
            "asynctaskmanager_up", "1 when the last scrape could read the database"
        )
        try:
            with self._lock:
                stats = collect_stats(self._storage, window=timedelta(0))
                self._count_events()
                events = dict(self._events)
        except AsyncTaskManagerError:
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield from _families(stats, events)

    def _count_events(self) -> None:
        def count(uow: Any) -> tuple[datetime, dict[str, int]]:
            now: datetime = uow.connection.execute(_DB_NOW).scalar_one()
            edge = (now - self._settle).replace(microsecond=0)
            start = self._counted_until or edge
            if edge <= start:
                return start, {}
            return edge, events_between(uow.connection, start, edge)

        edge, counted = self._storage.run(count, read_only=True)
        self._counted_until = edge
        for kind, n in counted.items():
            self._events[kind] = self._events.get(kind, 0) + n


def _families(stats: QueueStats, events: Mapping[str, int]) -> Iterator[Any]:
    tasks = GaugeMetricFamily(
        "asynctaskmanager_tasks",
        "Tasks by status and type (pending and running only; finished ones are counted by "
        "asynctaskmanager_task_events_total)",
        labels=["status", "task_type"],
    )
    for (status, kind), n in sorted(stats.tasks.items()):
        tasks.add_metric([status, kind], n)
    yield tasks

    age = GaugeMetricFamily(
        "asynctaskmanager_oldest_due_pending_age_seconds",
        "Age (since creation) of the oldest pending task that is due; 0 when none waits",
    )
    oldest = stats.oldest_due_pending_age
    age.add_metric([], 0.0 if oldest is None else oldest.total_seconds())
    yield age

    running = GaugeMetricFamily(
        "asynctaskmanager_running_tasks", "Running tasks by worker", labels=["worker_id"]
    )
    for worker, n in sorted(stats.running_by_worker.items()):
        running.add_metric([worker], n)
    yield running

    workers = GaugeMetricFamily(
        "asynctaskmanager_workers", "Worker rows by status", labels=["status"]
    )
    for status, n in sorted(stats.workers.items()):
        workers.add_metric([status], n)
    yield workers

    silent = GaugeMetricFamily(
        "asynctaskmanager_silent_online_workers",
        "Workers still marked online whose heartbeat is older than dead_after",
    )
    silent.add_metric([], stats.silent_online_workers)
    yield silent

    counters = CounterMetricFamily(
        "asynctaskmanager_task_events",
        "Task events (task_log rows) since the exporter started, by event",
        labels=["event", "log_type"],
    )
    for kind, name in EVENT_COUNTERS.items():
        counters.add_metric([name, kind], events.get(kind, 0))
    yield counters
