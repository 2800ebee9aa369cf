"""The claim: which pending tasks a worker gets, and the locks that keep it exact.

Lock order, the doctrine every transaction of the queue follows (so that no two wait on
each other in a circle):

1. Everywhere but in a claim: task rows before worker rows.
2. A claim locks its own worker row first, then pending task rows, skipping those locked by
   others (SKIP LOCKED), and last the task-config rows of the types it took, in key order,
   to check max_concurrent against the running count, its own rows included, just before it
   commits. Claimers of a type are serialised only for that check and the commit, and the
   check is exact: each one sees every claim committed before it.
3. A claim that would exceed a limit is rolled back (:class:`OverLimit`) and run again the
   careful way, ``lock_limits_first``: the config rows are locked before anything is
   counted. That is also the only way where the server has no SKIP LOCKED.
4. Nothing else locks task-config rows, and with SKIP LOCKED a claim never waits on a task
   row, so the orders cannot deadlock. In the plain FOR UPDATE fallback a claim may wait on
   a row that a sweep is requeueing while the sweep waits on that claim's worker row: the
   server breaks that rare deadlock and the loser is retried like any other.
5. complete_and_claim holds its completed task row, then its worker row, before it claims in
   the order of 2; it does so only with SKIP LOCKED, so it waits on nothing but config rows,
   whose holders wait on nothing. Without SKIP LOCKED, or over a limit, it commits the
   completion first and claims on its own.

6. On a cluster (MariaDB Galera; the runner says so, see ``UnitOfWork.cluster``) row locks are
   node-local: claims on two nodes both hold "the" config row lock and both count the same
   free slot. There a claim also writes the config rows of the types it took (``claim_seq +
   1``, rows it already holds, so no new wait), and certification lets only one of two such
   claims commit; the other is rolled back (1213) and rerun by the runner, and then counts
   the first. The worker row that every claim writes (its load) keeps capacity exact the
   same way.

SQLite ignores FOR UPDATE: there every writer begins with BEGIN IMMEDIATE, which holds the
database's write lock for the whole transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from functools import lru_cache
from typing import Any

from sqlalchemy import Connection, Integer, Select, bindparam, func, or_, select, update

from asynctaskmanager.domain.attempts import new_log
from asynctaskmanager.domain.enums import LogType, TaskStatus, WorkerStatus
from asynctaskmanager.domain.models import Task, restore
from asynctaskmanager.errors import NotFoundError, StorageError
from asynctaskmanager.infrastructure.expressions import database_clock, db_now, filter_only
from asynctaskmanager.infrastructure.schema import task_config_table as cfg
from asynctaskmanager.infrastructure.schema import task_table as t
from asynctaskmanager.infrastructure.schema import worker_table as w
from asynctaskmanager.infrastructure.types import UTCDateTime
from asynctaskmanager.infrastructure.unit_of_work import UnitOfWork

CLAIM_MAX = 1000

# The hot path's statements, built once. Building a Core statement and computing its cache
# key cost more CPU than running it on a local database; a prebuilt statement only binds its
# parameters. (Parameter names must not be column names: in an UPDATE those would become
# SET clauses.) Each statement that takes a list has a one-value twin: an expanding IN costs
# more to bind than the rest of the statement, and one type (one task) is the common case.
_LOCK_WORKER = (
    select(w.c.status, w.c.capacity, w.c.current_load, w.c.supported_types)
    .where(w.c.worker_id == bindparam("p_worker_id"))
    .with_for_update()
)
_ENABLED_LIMITS = (
    select(cfg.c.task_type, cfg.c.max_concurrent)
    .where(cfg.c.enabled == True)  # noqa: E712
    .order_by(cfg.c.task_type)
)
_LIMITS_OF = _ENABLED_LIMITS.where(cfg.c.task_type.in_(bindparam("p_types", expanding=True)))
# The same, with the rows locked in key order (see the module's docstring).
_LOCK_ENABLED_LIMITS = _ENABLED_LIMITS.with_for_update()
_LOCK_LIMITS_OF = _LIMITS_OF.with_for_update()
_RUNNING_BY_TYPE = (
    select(t.c.task_type, func.count())
    .where(
        t.c.status == TaskStatus.RUNNING.value,
        t.c.task_type.in_(bindparam("p_types", expanding=True)),
    )
    .group_by(t.c.task_type)
)
_RUNNING_OF_TYPE = (
    select(t.c.task_type, func.count())
    .where(t.c.status == TaskStatus.RUNNING.value, t.c.task_type == bindparam("p_type"))
    .group_by(t.c.task_type)
)


_START = update(t).values(
    status=TaskStatus.RUNNING.value,
    worker_id=bindparam("p_worker_id"),
    started_at=bindparam("p_now", type_=UTCDateTime()),
)
_MARK_RUNNING = _START.where(
    t.c.task_id.in_(bindparam("p_task_ids", expanding=True)),
    filter_only(t.c.status) == TaskStatus.PENDING.value,
)
_MARK_ONE_RUNNING = _START.where(
    t.c.task_id == bindparam("p_task_id"), t.c.status == TaskStatus.PENDING.value
)
_BUMP_CLAIM_SEQ = (
    update(cfg)
    .where(cfg.c.task_type.in_(bindparam("p_types", expanding=True)))
    .values(claim_seq=cfg.c.claim_seq + 1)
)
_ADD_LOAD = (
    update(w)
    .where(w.c.worker_id == bindparam("p_worker_id"))
    .values(current_load=w.c.current_load + bindparam("p_count", type_=Integer()))
)


# What a claim would take if no limit or capacity stood in the way: due pending tasks of
# enabled types (served by ix_task_claim's status prefix).
_RUNNABLE = (
    select(func.count())
    .select_from(t.join(cfg, cfg.c.task_type == t.c.task_type))
    .where(
        t.c.status == TaskStatus.PENDING.value,
        t.c.task_type.in_(bindparam("p_types", expanding=True)),
        or_(t.c.scheduled_at.is_(None), t.c.scheduled_at <= func.current_timestamp()),
        cfg.c.enabled == True,  # noqa: E712
    )
)


def count_runnable(uow: UnitOfWork, task_types: Sequence[str]) -> int:
    return int(uow.connection.execute(_RUNNABLE, {"p_types": list(task_types)}).scalar_one())


def claim_tasks(
    uow: UnitOfWork,
    worker_id: str,
    limit: int,
    *,
    skip_locked: bool,
    lock_limits_first: bool = False,
) -> list[Task]:
    """One claim, checking max_concurrent last (see the module's docstring) unless
    ``lock_limits_first``: then the config rows are locked before anything is counted.

    Raises :class:`OverLimit` when the claim's own tasks would take a type past its
    max_concurrent: the caller rolls back and claims again with ``lock_limits_first``."""
    connection = uow.connection
    worker = connection.execute(_LOCK_WORKER, {"p_worker_id": worker_id}).first()
    if worker is None:
        raise NotFoundError("worker", worker_id)
    status, capacity, load, supported = worker
    wanted = min(limit, capacity - load)
    if status != WorkerStatus.ONLINE.value or wanted <= 0:
        return []
    if supported is not None and not supported:
        return []
    room = free_slots(connection, supported, lock=lock_limits_first)
    if not room:
        return []
    candidates, now = pick(connection, room, wanted, skip_locked)
    if not candidates:
        return []
    assert now is not None

    ids = [row["task_id"] for row in candidates]
    if len(ids) == 1:
        mark = {"p_task_id": ids[0], "p_worker_id": worker_id, "p_now": now}
        result = connection.execute(_MARK_ONE_RUNNING, mark)
    else:
        mark = {"p_task_ids": ids, "p_worker_id": worker_id, "p_now": now}
        result = connection.execute(_MARK_RUNNING, mark)
    if result.rowcount != len(ids):
        # The rows are locked (or the database is, on SQLite): this cannot happen unless
        # the locking is broken. Never hand out a task that someone else may hold.
        raise StorageError(f"claim: {result.rowcount} of {len(ids)} locked rows updated")
    uow.task_logs.create_many(
        (
            new_log(
                row["task_id"],
                LogType.CLAIMED,
                TaskStatus.PENDING,
                TaskStatus.RUNNING,
                details={"worker_id": worker_id, "attempt": row["retry_count"] + 1},
                created_at=now,
            )
            for row in candidates
        ),
        savepoint=False,
    )
    connection.execute(_ADD_LOAD, {"p_worker_id": worker_id, "p_count": len(candidates)})
    taken = sorted({row["task_type"] for row in candidates})
    if not lock_limits_first:
        free = free_slots(connection, taken, lock=True, keep_full=True)
        if any(free.get(task_type, -1) < 0 for task_type in taken):
            raise OverLimit  # or a type was disabled meanwhile
    if uow.cluster.is_cluster:
        # Doctrine 6: the config rows are held already; the write makes the limit exact.
        connection.execute(_BUMP_CLAIM_SEQ, {"p_types": taken})
    running = {"status": TaskStatus.RUNNING, "worker_id": worker_id, "started_at": now}
    return [restore(Task, row | running) for row in candidates]


def claim_statement(types: Sequence[str], limit: int, *, skip_locked: bool) -> Select[Any]:
    """The claim's SELECT: runnable tasks of ``types`` in claim order, locked, with the
    database's clock as a last column (``db_now``).

    Due-ness is judged in SQL against the database's clock, read by this statement, after
    the worker and task-config locks are held (a clock read before a long lock wait would
    start the attempt in the past and time it out early).

    Served by ``ix_task_claim`` (status, priority DESC, created_at, task_id) without a
    filesort. ``skip_locked`` where the server has it; else a plain FOR UPDATE, which is
    still correct: claimers of the same types are serialised by the task-config row locks
    taken before it. SQLite ignores FOR UPDATE: there BEGIN IMMEDIATE already holds the
    write lock.
    """
    return (
        select(t, db_now())
        .where(
            t.c.status == TaskStatus.PENDING.value,
            # One type is the common case; = binds cheaper than an expanding IN.
            t.c.task_type == types[0] if len(types) == 1 else t.c.task_type.in_(list(types)),
            or_(t.c.scheduled_at.is_(None), t.c.scheduled_at <= database_clock()),
        )
        .order_by(t.c.priority.desc(), t.c.created_at, t.c.task_id)
        .limit(limit)
        .with_for_update(skip_locked=skip_locked)
    )


@lru_cache(maxsize=512)
def _claim_statement(types: tuple[str, ...], limit: int, skip_locked: bool) -> Select[Any]:
    """:func:`claim_statement`, built once per (types, limit, skip_locked)."""
    return claim_statement(types, limit, skip_locked=skip_locked)


def free_slots(
    connection: Connection, types: list[str] | None, *, lock: bool, keep_full: bool = False
) -> dict[str, int]:
    """Free running slots (max_concurrent less the running count) of each enabled type of
    ``types`` (None: every type); only types with a free slot unless ``keep_full``.

    With ``lock`` the task-config rows are locked first, in key order, so that two claimers
    never count the same free slot and never deadlock on each other. Only claims lock them.
    """
    if types is None:
        rows = connection.execute(_LOCK_ENABLED_LIMITS if lock else _ENABLED_LIMITS)
    else:
        rows = connection.execute(_LOCK_LIMITS_OF if lock else _LIMITS_OF, {"p_types": list(types)})
    max_running: dict[str, int] = {task_type: n for task_type, n in rows}
    if not max_running:
        return {}
    if len(max_running) == 1:
        [only] = max_running
        counted = connection.execute(_RUNNING_OF_TYPE, {"p_type": only})
    else:
        counted = connection.execute(_RUNNING_BY_TYPE, {"p_types": list(max_running)})
    running: dict[str, int] = dict(counted.all())
    free = {task_type: n - running.get(task_type, 0) for task_type, n in max_running.items()}
    return free if keep_full else {task_type: n for task_type, n in free.items() if n > 0}


def pick(
    connection: Connection, room: dict[str, int], wanted: int, skip_locked: bool
) -> tuple[list[dict[str, Any]], datetime | None]:
    """The rows of the first ``wanted`` runnable tasks in claim order, within each type's
    free slots, and the database's clock.

    A type that fills up is dropped from the query and the query runs again, so the pending
    tasks of a full type never hide the runnable tasks of other types behind them. Each
    round drops at least one type.
    """
    room = dict(room)
    chosen: list[dict[str, Any]] = []
    now: datetime | None = None
    while room and len(chosen) < wanted:
        query = _claim_statement(tuple(sorted(room)), wanted - len(chosen), skip_locked)
        batch = []
        for row in connection.execute(query):
            values = dict(row._mapping)
            now = values.pop("db_now")
            batch.append(values)
        slots = dict(room)
        taken: list[dict[str, Any]] = []
        full: set[str] = set()
        for values in batch:
            task_type = values["task_type"]
            if slots[task_type] > 0:
                slots[task_type] -= 1
                taken.append(values)
            else:
                full.add(task_type)
        if not full:
            chosen.extend(taken)
            break
        # A full type's share is final; the other types' rows are read again next round.
        chosen.extend(values for values in taken if values["task_type"] in full)
        for task_type in full:
            del room[task_type]
    chosen.sort(key=lambda row: (-row["priority"], row["created_at"], row["task_id"]))
    return chosen, now


class OverLimit(Exception):
    """A claim's own tasks would take a type past its max_concurrent: roll it back."""
