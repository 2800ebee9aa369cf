"""The measured operations, twice: through the library (Ours) and straight on the driver (Raw).

Raw is the floor: the same statements, in the same transactions, with the same rows written
(one task_log row per transition) and the same locks that the library's queue takes,
written by hand with sqlite3, MySQLdb or psycopg and prepared once. Per operation, in one
transaction each:

- enqueue: read the type's config and the database clock; insert the task; insert its
  'created' log row; commit.
- bulk enqueue: the same, with one executemany for the tasks and one for the log rows.
- get: select the row by primary key and decode its JSON (autocommit: one round trip).
- claim (n): lock the worker row (status, capacity, load); read the enabled types' limits
  and count their running tasks; select up to n due pending tasks in claim order FOR UPDATE
  SKIP LOCKED (SQLite: under BEGIN IMMEDIATE), with the clock; mark them running; insert
  one 'claimed' log row each; add n to the worker's load; lock the taken types' config rows
  and count again (max_concurrent, own rows included); commit. Over a limit: roll back and
  claim again with the config rows locked before the count.
- complete: guarded update (same task, status, worker, attempt); release the worker's slot;
  insert the 'completed' log row; commit.
- complete many and claim (the batched loop): lock the batch's task rows in key order and
  keep those still held (status, worker, attempt); one UPDATE marks them completed; one
  UPDATE per worker frees their slots; one executemany writes the 'completed' log rows; then
  the claim above, in the same transaction; commit.
"""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import text

from asynctaskmanager import Task, TaskRequest
from bench.common import (
    LOG_COLUMNS,
    RESULT,
    TASK_COLUMNS,
    TASK_TYPE,
    Locator,
    Raw,
    driver_connection,
    fast_id,
    load_tasks,
    open_ours,
    payload,
    register_ours,
    register_raw,
    seed_ours,
    seed_raw,
)


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


class Ours:
    name = "ours"

    def __init__(self, locator: Locator, *, seed: bool = True) -> None:
        self.locator = locator
        self.storage = open_ours(locator)
        self.queue = self.storage.queue
        if seed:
            seed_ours(self.storage)

    def register(self, worker_id: str, capacity: int | None = None) -> None:
        if capacity is None:
            register_ours(self.storage, worker_id)
        else:
            register_ours(self.storage, worker_id, capacity)

    def enqueue(self, i: int) -> str:
        return self.queue.enqueue(TASK_TYPE, payload(i)).task_id

    def enqueue_many(self, n: int, offset: int = 0) -> int:
        requests = [TaskRequest(TASK_TYPE, payload(offset + i)) for i in range(n)]
        return len(self.queue.enqueue_many(requests))

    def get(self, task_id: str) -> Any:
        return self.storage.tasks.get(task_id)

    def claim(self, worker_id: str, limit: int = 1) -> list[Task]:
        return self.queue.claim(worker_id, limit)

    def complete(self, task: Task) -> bool:
        return self.queue.complete(task, RESULT)

    def load(self, statuses: list[tuple[str, bool]], worker_id: str | None = None) -> int:
        conn, proxy = driver_connection(self.storage)
        try:
            sqlite = self.locator.backend in ("memory", "sqlite")
            return load_tasks(conn, sqlite, statuses, worker_id=worker_id)
        finally:
            proxy.close()

    def ids(self, limit: int) -> list[str]:
        with self.storage.unit_of_work() as uow:
            return list(
                uow.connection.execute(text(f"SELECT task_id FROM task LIMIT {limit}")).scalars()
            )

    def release_running(self, to_status: str = "completed") -> None:
        """Untimed: finish (or re-queue) every running task and zero the workers' loads."""
        with self.storage.unit_of_work() as uow:
            if to_status == "pending":
                uow.connection.execute(
                    text(
                        "UPDATE task SET status = 'pending', worker_id = NULL, started_at = NULL"
                        " WHERE status = 'running'"
                    )
                )
            else:
                uow.connection.execute(
                    text("UPDATE task SET status = 'completed' WHERE status = 'running'")
                )
            uow.connection.execute(text("UPDATE worker SET current_load = 0"))
            uow.commit()

    def close(self) -> None:
        self.storage.close()


class _OverLimit(Exception):
    pass


class RawDriver:
    name = "raw"

    def __init__(self, locator: Locator, memory_template: Any = None, *, seed: bool = True):
        self.locator = locator
        self.raw = raw = Raw(locator, memory_template)
        self.cur = raw.cur
        p = raw.p
        self.sql_config = (
            f"SELECT default_timeout, default_max_retry, enabled, {raw.now}"
            f" FROM task_config WHERE task_type IN ({p})"
        )
        self.sql_insert_task = (
            f"INSERT INTO task ({', '.join(TASK_COLUMNS)}) VALUES ({raw.marks(len(TASK_COLUMNS))})"
        )
        self.sql_insert_log = (
            f"INSERT INTO task_log ({', '.join(LOG_COLUMNS)})"
            f" VALUES ({raw.marks(len(LOG_COLUMNS))})"
        )
        self.sql_insert_log_now = (
            f"INSERT INTO task_log ({', '.join(LOG_COLUMNS[:-1])})"
            f" VALUES ({raw.marks(len(LOG_COLUMNS) - 1)})"
        )
        self.sql_get = f"SELECT {', '.join(TASK_COLUMNS)} FROM task WHERE task_id = {p}"
        self.sql_worker = (
            "SELECT status, capacity, current_load, supported_types"
            f" FROM worker WHERE worker_id = {p}{raw.for_update}"
        )
        self.sql_limits = (
            "SELECT task_type, max_concurrent FROM task_config"
            f" WHERE enabled = TRUE ORDER BY task_type{raw.for_update}"
        )
        self.sql_running = (
            "SELECT task_type, count(*) FROM task"
            f" WHERE status = 'running' AND task_type IN ({p}) GROUP BY task_type"
        )
        self.sql_load = f"UPDATE worker SET current_load = current_load + {p} WHERE worker_id = {p}"
        self.sql_complete = (
            "UPDATE task SET status = 'completed', result = "
            f"{p}, completed_at = {raw.now} WHERE task_id = {p} AND status = 'running'"
            f" AND worker_id = {p} AND retry_count = {p}"
        )
        self.sql_release = (
            "UPDATE worker SET current_load = current_load - 1"
            f" WHERE worker_id = {p} AND current_load > 0"
        )
        self.sql_release_many = (
            f"UPDATE worker SET current_load = CASE WHEN current_load >= {p}"
            f" THEN current_load - {p} ELSE 0 END WHERE worker_id = {p}"
        )
        if seed:
            seed_raw(raw)

    def _claim_sql(self, n_types: int, limit: int) -> str:
        """Due pending tasks in claim order, locked, with the database clock (read after the
        worker and config locks, as the library does)."""
        return (
            f"SELECT {', '.join(TASK_COLUMNS)}, {self.raw.now} FROM task"
            f" WHERE status = 'pending' AND task_type IN ({self.raw.marks(n_types)})"
            f" AND (scheduled_at IS NULL OR scheduled_at <= {self.raw.now})"
            f" ORDER BY priority DESC, created_at, task_id LIMIT {limit}{self.raw.skip_locked}"
        )

    def register(self, worker_id: str, capacity: int | None = None) -> None:
        if capacity is None:
            register_raw(self.raw, worker_id)
        else:
            register_raw(self.raw, worker_id, capacity)

    def _config_and_now(self) -> tuple[int, int, Any]:
        self.cur.execute(self.sql_config, (TASK_TYPE,))
        timeout, max_retry, enabled, now = self.cur.fetchone()
        if not enabled:
            raise RuntimeError("type disabled")
        return timeout, max_retry, now

    def _task_row(
        self, task_id: str, i: int, timeout: int, max_retry: int, now: Any
    ) -> tuple[Any, ...]:
        return (
            task_id,
            TASK_TYPE,
            1,
            "pending",
            _dumps(payload(i)),
            None,
            None,
            None,
            0,
            max_retry,
            timeout,
            now,
            None,
            None,
            None,
        )

    def enqueue(self, i: int) -> str:
        raw = self.raw
        raw.begin()
        timeout, max_retry, now = self._config_and_now()
        task_id = fast_id()
        self.cur.execute(self.sql_insert_task, self._task_row(task_id, i, timeout, max_retry, now))
        self.cur.execute(
            self.sql_insert_log, (fast_id(), task_id, "created", None, "pending", None, None, now)
        )
        raw.commit()
        return task_id

    def enqueue_many(self, n: int, offset: int = 0) -> int:
        raw = self.raw
        raw.begin()
        timeout, max_retry, now = self._config_and_now()
        tasks = [self._task_row(fast_id(), offset + i, timeout, max_retry, now) for i in range(n)]
        self.cur.executemany(self.sql_insert_task, tasks)
        self.cur.executemany(
            self.sql_insert_log,
            [(fast_id(), task[0], "created", None, "pending", None, None, now) for task in tasks],
        )
        raw.commit()
        return n

    def get(self, task_id: str) -> Any:
        self.raw.autocommit(True)
        try:
            self.cur.execute(self.sql_get, (task_id,))
            row = self.cur.fetchone()
        finally:
            self.raw.autocommit(False)
        if row is None:
            raise KeyError(task_id)
        values = dict(zip(TASK_COLUMNS, row, strict=True))
        for key in ("payload", "result"):
            if isinstance(values[key], str):  # psycopg decodes jsonb itself
                values[key] = json.loads(values[key])
        return values

    def claim(self, worker_id: str, limit: int = 1) -> list[tuple[str, str, int]]:
        try:
            return self._claim(worker_id, limit, lock_first=False)
        except _OverLimit:
            return self._claim(worker_id, limit, lock_first=True)

    def _limits(self, kinds: list[str] | None, lock: bool) -> dict[str, int]:
        """max_concurrent less the running count, per enabled type of ``kinds``."""
        raw, cur, p = self.raw, self.cur, self.raw.p
        sql = self.sql_limits if lock else self.sql_limits.replace(raw.for_update, "")
        if kinds is None:
            cur.execute(sql)
        else:
            cur.execute(
                sql.replace(" ORDER BY", f" AND task_type IN ({raw.marks(len(kinds))}) ORDER BY"),
                kinds,
            )
        limits = dict(cur.fetchall())
        if not limits:
            return {}
        kinds = list(limits)
        cur.execute(
            self.sql_running.replace("IN (" + p + ")", f"IN ({raw.marks(len(kinds))})"), kinds
        )
        running = dict(cur.fetchall())
        return {k: n - running.get(k, 0) for k, n in limits.items()}

    def _claim(self, worker_id: str, limit: int, lock_first: bool) -> list[tuple[str, str, int]]:
        raw = self.raw
        raw.begin()
        try:
            claimed = self._claim_in(worker_id, limit, lock_first)
            raw.commit()
        except BaseException:
            raw.rollback()
            raise
        return claimed

    def _claim_in(self, worker_id: str, limit: int, lock_first: bool) -> list[tuple[str, str, int]]:
        """The claim's statements, inside the caller's transaction."""
        raw, cur, p = self.raw, self.cur, self.raw.p
        cur.execute(self.sql_worker, (worker_id,))
        status, capacity, load, supported = cur.fetchone()
        wanted = min(limit, capacity - load)
        if status != "online" or wanted <= 0:
            return []
        # The free slots (max_concurrent): counted now, checked again under the config
        # rows' locks just before the commit (or locked first, after a conflict).
        supported_kinds = supported if not isinstance(supported, str) else json.loads(supported)
        free = {k: n for k, n in self._limits(supported_kinds, lock_first).items() if n > 0}
        if not free:
            return []
        types = sorted(free)
        cur.execute(self._claim_sql(len(types), wanted), types)
        rows = []
        now = None
        for row in cur.fetchall():
            now = row[-1]
            if free[row[1]] > 0:
                free[row[1]] -= 1
                rows.append(row)
        if not rows:
            return []
        ids = [row[0] for row in rows]
        # '+status' on SQLite: filter only, so that the planner looks the ids up by key
        # (as the library does; see expressions.filter_only).
        status_term = "+status" if raw.sqlite else "status"
        cur.execute(
            f"UPDATE task SET status = 'running', worker_id = {p}, started_at = {p}"
            f" WHERE task_id IN ({raw.marks(len(ids))}) AND {status_term} = 'pending'",
            (worker_id, now, *ids),
        )
        if cur.rowcount != len(ids):
            raise RuntimeError("claim: locked rows changed")
        cur.executemany(
            self.sql_insert_log,
            [
                (
                    fast_id(),
                    row[0],
                    "claimed",
                    "pending",
                    "running",
                    None,
                    _dumps({"worker_id": worker_id, "attempt": row[8] + 1}),
                    now,
                )
                for row in rows
            ],
        )
        cur.execute(self.sql_load, (len(rows), worker_id))
        if not lock_first:
            taken = sorted({row[1] for row in rows})
            after = self._limits(taken, lock=True)
            if any(after.get(kind, -1) < 0 for kind in taken):
                raise _OverLimit
        return [(row[0], worker_id, row[8]) for row in rows]

    def _complete_many_in(self, tasks: list[tuple[str, str, int]]) -> list[bool]:
        """The batched completion's statements, inside the caller's transaction, as the
        library's ``complete_attempts``: lock the batch's rows in key order, keep those the
        worker still holds (status, worker, attempt), one UPDATE for them, one slot release
        per worker, one executemany of the log rows."""
        raw, cur, p = self.raw, self.cur, self.raw.p
        ids = sorted(task_id for task_id, _, _ in tasks)
        cur.execute(
            "SELECT task_id, status, worker_id, retry_count FROM task"
            f" WHERE task_id IN ({raw.marks(len(ids))}) ORDER BY task_id{raw.for_update}",
            ids,
        )
        current = {row[0]: row[1:] for row in cur.fetchall()}
        applies = [
            current.get(task_id) == ("running", worker_id, retry_count)
            for task_id, worker_id, retry_count in tasks
        ]
        held = [task for task, ok in zip(tasks, applies, strict=True) if ok]
        if not held:
            return applies
        cur.execute(
            f"UPDATE task SET status = 'completed', result = {p},"
            f" completed_at = {raw.now} WHERE task_id IN ({raw.marks(len(held))})",
            (_dumps(RESULT), *(task_id for task_id, _, _ in held)),
        )
        released: dict[str, int] = {}
        for _, worker_id, _ in held:
            released[worker_id] = released.get(worker_id, 0) + 1
        for worker_id, count in sorted(released.items()):
            cur.execute(self.sql_release_many, (count, count, worker_id))
        cur.executemany(
            self.sql_insert_log_now,
            [
                (fast_id(), task_id, "completed", "running", "completed", None, None)
                for task_id, _, _ in held
            ],
        )
        return applies

    def complete_many_and_claim(
        self, tasks: list[tuple[str, str, int]], limit: int
    ) -> tuple[list[bool], list[tuple[str, str, int]]]:
        """Complete ``tasks`` (all held by one worker) and claim up to ``limit`` for that
        worker, in one transaction; over a max_concurrent the completion commits alone and
        the claim runs again with the config rows locked first (the library's rule)."""
        worker_id = tasks[0][1]
        raw = self.raw
        raw.begin()
        try:
            applied = self._complete_many_in(tasks)
            try:
                # SQLite's write lock serialises claimers: the limits are counted under it.
                claimed = self._claim_in(worker_id, limit, lock_first=raw.sqlite)
            except _OverLimit:
                raw.rollback()
                raw.begin()
                applied = self._complete_many_in(tasks)
                raw.commit()
                return applied, self._claim(worker_id, limit, lock_first=True)
            raw.commit()
        except BaseException:
            raw.rollback()
            raise
        return applied, claimed

    def complete(self, task: tuple[str, str, int]) -> bool:
        task_id, worker_id, retry_count = task
        raw, cur = self.raw, self.cur
        raw.begin()
        try:
            cur.execute(self.sql_complete, (_dumps(RESULT), task_id, worker_id, retry_count))
            if cur.rowcount != 1:
                raw.commit()
                return False
            cur.execute(self.sql_release, (worker_id,))
            cur.execute(
                self.sql_insert_log_now,
                (fast_id(), task_id, "completed", "running", "completed", None, None),
            )
            raw.commit()
        except BaseException:
            raw.rollback()
            raise
        return True

    def load(self, statuses: list[tuple[str, bool]], worker_id: str | None = None) -> int:
        return load_tasks(self.raw.conn, self.raw.sqlite, statuses, worker_id=worker_id)

    def ids(self, limit: int) -> list[str]:
        self.raw.begin()
        self.cur.execute(f"SELECT task_id FROM task LIMIT {limit}")
        ids = [row[0] for row in self.cur.fetchall()]
        self.raw.commit()
        return ids

    def release_running(self, to_status: str = "completed") -> None:
        self.raw.begin()
        if to_status == "pending":
            self.cur.execute(
                "UPDATE task SET status = 'pending', worker_id = NULL, started_at = NULL"
                " WHERE status = 'running'"
            )
        else:
            self.cur.execute("UPDATE task SET status = 'completed' WHERE status = 'running'")
        self.cur.execute("UPDATE worker SET current_load = 0")
        self.raw.commit()

    def close(self) -> None:
        self.raw.close()
