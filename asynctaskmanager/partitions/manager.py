"""Opt-in monthly partitions of ``task`` and ``task_log``: enable, status, rotate.

The key is the id (see docs/partitioning.md for the measurements behind that choice): a
month's partition holds the ids made in that UTC month. Retention still means ``created_at``:
a month is dropped only when every task in it is final and none of them was created inside
the retention window, so a task whose id was made just before a month's end and stored just
after it is never removed early.

Every DDL statement runs with a short ``lock_wait_timeout``: a partition ALTER queued behind
an open transaction blocks every new writer of the table for as long as it waits, so it gives
up after a few seconds and the run reports it, to be retried by the next run.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Literal

from sqlalchemy import Connection, text
from sqlalchemy.exc import DBAPIError

from asynctaskmanager.errors import (
    ConfigurationError,
    StorageError,
    TransientStorageError,
    ValidationError,
)
from asynctaskmanager.partitions.catalogue import forget_layout
from asynctaskmanager.partitions.lease import (
    DEFAULT_LOCK_WAIT_SECONDS,
    LEASE_NAME,
    LEASE_SECONDS,
    Lease,
)
from asynctaskmanager.partitions.months import (
    ERA_END,
    ERA_START,
    add_months,
    month_of,
    month_range,
    month_start,
    ulid_instant,
)
from asynctaskmanager.partitions.mysql import FUTURE, LOW, NAMED, MySQLPartitioning, RawPartition

if TYPE_CHECKING:  # the storage's queue imports this package (queue.prune drops months)
    from asynctaskmanager.storage import Storage

# (table, partition key): task_log's log_id is a ULID made when the log is written.
TABLES: tuple[tuple[str, str], ...] = (("task", "task_id"), ("task_log", "log_id"))
DEFAULT_AHEAD = 3
SAMPLE = 5

Kind = Literal["month", "low", "future", "named"]


@dataclass(frozen=True, slots=True)
class PartitionInfo:
    """One partition. ``lower``/``upper`` bound the ULID time of its ids (UTC); None where
    the partition is not bounded by time (``p_low`` below, ``p_named`` above).
    ``unfinished`` counts pending or running tasks (None for task_log)."""

    table: str
    name: str
    kind: Kind
    lower: datetime | None
    upper: datetime | None
    row_estimate: int
    unfinished: int | None = None
    unfinished_sample: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class HeldMonth:
    """A month past the retention that stays, and the tasks that keep it."""

    name: str
    unfinished: int
    unfinished_sample: tuple[str, ...]
    created_in_retention: int
    created_in_retention_sample: tuple[str, ...]

    def describe(self) -> str:
        reasons = []
        if self.unfinished:
            ids = ", ".join(self.unfinished_sample)
            reasons.append(f"{self.unfinished} unfinished task(s) ({ids})")
        if self.created_in_retention:
            ids = ", ".join(self.created_in_retention_sample)
            count = self.created_in_retention
            reasons.append(f"{count} task(s) created inside the retention ({ids})")
        return f"task {self.name} kept: " + "; ".join(reasons)


@dataclass
class RotationReport:
    """What a rotation did, or would do (``dry_run``), and why it stopped early if it did."""

    dry_run: bool
    statements: list[str] = field(default_factory=list)
    executed: list[str] = field(default_factory=list)
    added: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    held: list[HeldMonth] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        """True when every planned statement ran (or, dry, would run) and nothing stopped."""
        return not self.problems

    def lines(self) -> list[str]:
        """A human summary, one line per fact, for a command line to print."""
        out = [f"would run: {sql}" for sql in self.statements] if self.dry_run else []
        out += [f"ran: {sql}" for sql in self.executed]
        out += [held.describe() for held in self.held]
        out += [f"stopped: {problem}" for problem in self.problems]
        return out or ["nothing to do"]


def _strategy(storage: Storage) -> MySQLPartitioning:
    if storage.backend in ("mysql", "mariadb"):
        return MySQLPartitioning()
    raise ConfigurationError(
        f"monthly partitions need MySQL or MariaDB; {storage.backend} does not partition"
    )


def _positive(name: str, value: object, minimum: int) -> int:
    if type(value) is not int or value < minimum:
        raise ValidationError(name, f"an integer of at least {minimum}", value)
    return value


def _now(now: datetime | None) -> datetime:
    if now is None:
        return datetime.now(timezone.utc)
    if not isinstance(now, datetime) or now.tzinfo is None:
        raise ValidationError("now", "must be a timezone-aware datetime", now)
    return now.astimezone(timezone.utc)


def _storage_error(error: DBAPIError, doing: str) -> StorageError:
    return StorageError(f"{doing}: {error.orig}")


def _instant(bound: str | None) -> datetime | None:
    """The instant a month bound (a ULID prefix) stands for."""
    if bound is None or bound in (ERA_START, ERA_END):
        return None
    return ulid_instant(bound.ljust(26, "0"))


def _infos(table: str, layout: Sequence[RawPartition]) -> list[PartitionInfo]:
    infos = []
    previous: str | None = None
    for part in layout:
        kind: Kind
        if part.name == LOW:
            kind = "low"
        elif part.name == FUTURE:
            kind = "future"
        elif part.name == NAMED:
            kind = "named"
        else:
            kind = "month"
        lower = _instant(previous)
        if kind == "month" and lower is None:
            lower = month_of(part.name)  # the oldest month also holds older ULIDs
        upper = _instant(part.bound)
        infos.append(PartitionInfo(table, part.name, kind, lower, upper, part.row_estimate))
        previous = part.bound
    return infos


def _layout(
    strategy: MySQLPartitioning, connection: Connection, table: str, key: str
) -> list[RawPartition]:
    layout = strategy.layout(connection, table, key)
    fixed = [p.name for p in layout or () if month_of(p.name) is None]
    if layout is None or fixed != [LOW, FUTURE, NAMED]:
        raise ConfigurationError(
            f"{table} is not partitioned by month on {key}: run partitions.enable(storage) first"
        )
    return layout


def partition_status(storage: Storage) -> list[PartitionInfo]:
    """Every partition of ``task`` then ``task_log``: bounds, row estimate (the catalogue's,
    approximate) and, for ``task``, how many unfinished tasks it holds (exact, per partition,
    through the status index) with a few of their ids."""
    strategy = _strategy(storage)
    out: list[PartitionInfo] = []
    try:
        with storage.engine.connect() as connection:
            for table, key in TABLES:
                for info in _infos(table, _layout(strategy, connection, table, key)):
                    if table == "task":
                        count, ids = strategy.unfinished(connection, info.name, SAMPLE)
                        info = PartitionInfo(
                            info.table, info.name, info.kind, info.lower, info.upper,
                            info.row_estimate, count, tuple(ids),
                        )  # fmt: skip
                    out.append(info)
    except DBAPIError as error:
        raise _storage_error(error, "reading the partitions") from error
    return out


def _oldest_id_month(connection: Connection, table: str, key: str) -> datetime | None:
    oldest = connection.execute(
        text(f"SELECT MIN({key}) FROM {table} WHERE {key} >= :lo AND {key} < :hi"),
        {"lo": ERA_START, "hi": ERA_END},
    ).scalar_one_or_none()
    if oldest is None:
        return None
    instant = ulid_instant(oldest[:10].ljust(26, "0"))
    return None if instant is None else month_start(instant)


def enable(
    storage: Storage,
    *,
    ahead: int = DEFAULT_AHEAD,
    lock_wait_seconds: int = DEFAULT_LOCK_WAIT_SECONDS,
    dry_run: bool = False,
    now: datetime | None = None,
) -> list[str]:
    """Partition ``task`` and ``task_log`` by month; returns the statements run (or, with
    ``dry_run``, that would run). A table already partitioned this way is left alone.

    On a table with rows this copies the whole table, and writers of it wait until the copy
    ends (about 10 s per million tasks measured here; see docs/partitioning.md). The
    months run from the oldest id's month to ``ahead`` months past now.
    """
    _positive("ahead", ahead, 1)
    _positive("lock_wait_seconds", lock_wait_seconds, 1)
    strategy = _strategy(storage)
    current = month_start(_now(now))
    statements = []
    try:
        with strategy.ddl_connection(storage.engine, lock_wait_seconds) as connection:
            # One set of months for both tables, so that their months drop together.
            oldest = [_oldest_id_month(connection, table, key) for table, key in TABLES]
            first = min([current, *(month for month in oldest if month is not None)])
            months = month_range(first, add_months(current, ahead))
            for table, key in TABLES:
                if strategy.layout(connection, table, key) is not None:
                    _layout(strategy, connection, table, key)  # ours, or say it is not
                    continue
                if strategy.is_partitioned(connection, table):
                    raise ConfigurationError(f"{table} is partitioned some other way; not touched")
                statements.append(strategy.enable(table, key, months))
            if not dry_run:
                for sql in statements:
                    connection.execute(text(sql))
                forget_layout(storage.engine)
    except DBAPIError as error:
        if strategy.is_lock_wait_timeout(error):
            raise TransientStorageError(
                f"enabling partitions waited over {lock_wait_seconds} s for a table lock"
                " (a long transaction is open); nothing changed, try again"
            ) from error
        raise _storage_error(error, "enabling partitions") from error
    return statements


def disable(storage: Storage, *, lock_wait_seconds: int = DEFAULT_LOCK_WAIT_SECONDS) -> list[str]:
    """Merge every partition back into one table (copies every row)."""
    strategy = _strategy(storage)
    statements = []
    try:
        with strategy.ddl_connection(storage.engine, lock_wait_seconds) as connection:
            for table, _key in TABLES:
                if strategy.is_partitioned(connection, table):
                    sql = strategy.disable(table)
                    connection.execute(text(sql))
                    statements.append(sql)
            forget_layout(storage.engine)
    except DBAPIError as error:
        raise _storage_error(error, "removing partitions") from error
    return statements


@dataclass
class _Plan:
    table: str
    sql: str
    added: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)


def _plan_ahead(
    strategy: MySQLPartitioning,
    connection: Connection,
    table: str,
    key: str,
    layout: Sequence[RawPartition],
    target: datetime,
    report: RotationReport,
) -> _Plan | None:
    months = [m for m in (month_of(p.name) for p in layout) if m is not None]
    last = max(months) if months else None
    wanted = [m for m in month_range(last or target, target) if last is None or m > last]
    if not wanted:
        return None
    rows = strategy.sample_ids(connection, table, key, FUTURE, SAMPLE)
    if rows:
        report.problems.append(
            f"{table}.{FUTURE} holds rows ({', '.join(rows)}): splitting it would copy them"
            f" under a table lock; not adding {', '.join(p for p in map(_name, wanted))}."
            " Rotation fell behind the clock: add months by hand in a quiet hour"
        )
        return None
    plan = _Plan(table, strategy.split(table, wanted))
    plan.added = [f"{table}.{_name(m)}" for m in wanted]
    return plan


def _name(month: datetime) -> str:
    return f"p{month.year:04d}{month.month:02d}"


def rotate(
    storage: Storage,
    *,
    ahead: int = DEFAULT_AHEAD,
    retain_months: int = 12,
    dry_run: bool = False,
    lock_wait_seconds: int = DEFAULT_LOCK_WAIT_SECONDS,
    now: datetime | None = None,
) -> RotationReport:
    """Keep ``ahead`` empty months past the current one and drop months older than
    ``retain_months`` whole months before the current one.

    Adding splits only the empty catch-all (if it holds rows, the report says so and nothing
    is added). A task month is dropped only when every task in it is final and none was
    created inside the retention; else the report names a few tasks that keep it. A task_log
    month goes with its task month, and never while an older task month is kept (its logs may
    belong to those tasks). Each DDL waits at most ``lock_wait_seconds`` for its table lock;
    past that the run stops, reports it, and the next run tries again. One host rotates at a
    time (a lease row); a second one finds the lease held and reports that.
    """
    _positive("ahead", ahead, 1)
    _positive("retain_months", retain_months, 1)
    _positive("lock_wait_seconds", lock_wait_seconds, 1)
    strategy = _strategy(storage)
    current = month_start(_now(now))
    cutoff = add_months(current, -retain_months)
    report = RotationReport(dry_run=dry_run)
    lease = None
    if not dry_run:
        lease = Lease(storage.engine, LEASE_NAME, LEASE_SECONDS)
        if not lease.acquire():
            report.problems.append(f"another host holds the rotation lease (in {lease.where})")
            return report
    try:
        plans = _plan(strategy, storage, current, ahead, cutoff, report)
        report.statements = [plan.sql for plan in plans]
        if not dry_run:
            _execute(strategy, storage, plans, lock_wait_seconds, report)
    except DBAPIError as error:
        raise _storage_error(error, "rotating partitions") from error
    finally:
        if lease is not None:
            lease.release()
    return report


def _plan(
    strategy: MySQLPartitioning,
    storage: Storage,
    current: datetime,
    ahead: int,
    cutoff: datetime,
    report: RotationReport,
) -> list[_Plan]:
    plans: list[_Plan] = []
    with storage.engine.connect() as connection:
        layouts = {table: _layout(strategy, connection, table, key) for table, key in TABLES}
        for table, key in TABLES:
            plan = _plan_ahead(
                strategy, connection, table, key, layouts[table], add_months(current, ahead), report
            )
            if plan is not None:
                report.added += plan.added
                plans.append(plan)
        task_drops: list[str] = []
        oldest_held: datetime | None = None
        for part in layouts["task"]:
            month = month_of(part.name)
            if month is None or add_months(month, 1) > cutoff:
                continue
            unfinished, unfinished_ids = strategy.unfinished(connection, part.name, SAMPLE)
            recent, recent_ids = strategy.created_since(connection, part.name, cutoff, SAMPLE)
            if unfinished or recent:
                report.held.append(
                    HeldMonth(
                        part.name, unfinished, tuple(unfinished_ids), recent, tuple(recent_ids)
                    )
                )
                oldest_held = month if oldest_held is None else min(oldest_held, month)
            else:
                task_drops.append(part.name)
        task_months = {p.name for p in layouts["task"] if month_of(p.name) is not None}
        log_drops = []
        for part in layouts["task_log"]:
            month = month_of(part.name)
            if month is None or add_months(month, 1) > cutoff:
                continue
            if oldest_held is not None and month >= oldest_held:
                continue
            if part.name in task_drops or part.name not in task_months:
                log_drops.append(part.name)
        # Never drop every month: the oldest one left also takes ids older than it.
        for table, drops in (("task", task_drops), ("task_log", log_drops)):
            months_left = [p for p in layouts[table] if month_of(p.name) is not None]
            if drops and len(drops) < len(months_left):
                dropped = [f"{table}.{name}" for name in drops]
                plans.append(_Plan(table, strategy.drop(table, drops), dropped=dropped))
    return plans


def _execute(
    strategy: MySQLPartitioning,
    storage: Storage,
    plans: Sequence[_Plan],
    lock_wait_seconds: int,
    report: RotationReport,
) -> None:
    with strategy.ddl_connection(storage.engine, lock_wait_seconds) as connection:
        for plan in plans:
            recheck = plan.dropped and plan.table == "task"
            if recheck and not _still_droppable(strategy, connection, plan):
                report.problems.append(f"a task appeared in {plan.sql!r} while planning; not run")
                continue
            try:
                connection.execute(text(plan.sql))
            except DBAPIError as error:
                if not strategy.is_lock_wait_timeout(error):
                    raise
                report.problems.append(
                    f"gave up after waiting {lock_wait_seconds} s for the table lock (an open"
                    f" transaction holds {plan.table}); not run: {plan.sql}. The next run retries"
                )
                return
            report.executed.append(plan.sql)
            report.dropped += plan.dropped


def _still_droppable(strategy: MySQLPartitioning, connection: Connection, plan: _Plan) -> bool:
    """Re-check just before the DROP: a task can only appear in an old month by an insert
    with an old id, but a check made seconds ago is no proof against it."""
    for qualified in plan.dropped:
        name = qualified.split(".", 1)[1]
        if strategy.unfinished(connection, name, 1)[0]:
            return False
    return True
