"""Fault-injection helpers for the reliability tests.

* :func:`consistency_violations`: the invariants every store must keep, whatever failed;
* :class:`ConnectionKiller` and :func:`on_points`: KILL our own MySQL connection at a chosen
  statement, from a second session;
* :class:`Adversary`: a second session that holds locks or builds a deadlock on cue;
* :func:`crash_worker` and :func:`soak_actor`: the bodies of the worker processes that the
  crash and soak tests SIGKILL. They live here, in an importable module, so that a
  ``forkserver`` can start them without the parent's open connections.
"""

from __future__ import annotations

import os
import random
import signal
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import URL, Connection, Engine, create_engine, event, select, text

from asynctaskmanager import (
    IllegalTransitionError,
    QueueSettings,
    Storage,
    Task,
    TaskPriority,
    TaskRequest,
    TaskStatus,
    TransientStorageError,
    Worker,
    can_transition,
    open_storage,
)
from asynctaskmanager.infrastructure.schema import task_config_table as cfg_t
from asynctaskmanager.infrastructure.schema import task_log_table as log_t
from asynctaskmanager.infrastructure.schema import task_table as task_t
from asynctaskmanager.infrastructure.schema import worker_table as worker_t

TABLES = (task_t, log_t, worker_t, cfg_t)

# --- what the database holds ----------------------------------------------------------------


def snapshot(storage: Storage) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table, in key order: equal snapshots mean an unchanged database."""

    def read(uow: Any) -> dict[str, list[tuple[Any, ...]]]:
        rows: dict[str, list[tuple[Any, ...]]] = {}
        for table in TABLES:
            key = next(iter(table.primary_key.columns))
            rows[table.name] = [
                tuple(r) for r in uow.connection.execute(select(table).order_by(key))
            ]
        return rows

    return storage.run(read)


def row_counts(storage: Storage) -> dict[str, int]:
    return {name: len(rows) for name, rows in snapshot(storage).items()}


def consistency_violations(storage: Storage) -> list[str]:
    """Each task's status agrees with its log, and each worker's load with its tasks.

    Order-free checks, so that same-second log rows cannot confuse them: for every status,
    the log's transitions into it minus those out of it is 1 for the task's current status
    and 0 for every other; every logged transition is allowed; one CREATED row; at most one
    COMPLETED; retry_count is the number of running -> pending rows; a worker's
    current_load is the number of tasks running on it, within its capacity.
    """

    def read(uow: Any) -> tuple[list[Any], list[Any], list[Any]]:
        s = uow.connection
        tasks = s.execute(
            select(
                task_t.c.task_id,
                task_t.c.status,
                task_t.c.worker_id,
                task_t.c.retry_count,
                task_t.c.started_at,
            )
        ).all()
        logs = s.execute(
            select(log_t.c.task_id, log_t.c.log_type, log_t.c.from_status, log_t.c.to_status)
        ).all()
        workers = s.execute(
            select(worker_t.c.worker_id, worker_t.c.current_load, worker_t.c.capacity)
        ).all()
        return tasks, logs, workers

    tasks, logs, workers = storage.run(read)
    problems: list[str] = []
    by_task: dict[str, list[Any]] = defaultdict(list)
    for log in logs:
        by_task[log.task_id].append(log)
    known = {task.task_id for task in tasks}
    for orphan in sorted(set(by_task) - known):
        problems.append(f"log rows for unknown task {orphan!r}")
    running_on: Counter[str] = Counter()
    for task in tasks:
        rows = by_task.get(task.task_id, [])
        balance: Counter[str] = Counter()
        created = completed = requeued = 0
        for log in rows:
            if log.log_type == "created":
                created += 1
            if log.to_status is None:
                continue
            if log.from_status is not None:
                if not can_transition(TaskStatus(log.from_status), TaskStatus(log.to_status)):
                    problems.append(f"{task.task_id}: logged {log.from_status} -> {log.to_status}")
                balance[log.from_status] -= 1
                if (log.from_status, log.to_status) == ("running", "pending"):
                    requeued += 1
            balance[log.to_status] += 1
            if log.to_status == "completed":
                completed += 1
        expected = Counter({task.status: 1})
        for status in TaskStatus:
            if balance[status.value] != expected[status.value]:
                problems.append(
                    f"{task.task_id}: status {task.status} but the log nets "
                    f"{balance[status.value]} into {status.value}"
                )
        if created != 1:
            problems.append(f"{task.task_id}: {created} CREATED log rows")
        if completed > 1:
            problems.append(f"{task.task_id}: completed {completed} times")
        if requeued != task.retry_count:
            problems.append(
                f"{task.task_id}: retry_count {task.retry_count} but {requeued} requeues logged"
            )
        if task.status == "running":
            if task.worker_id is None or task.started_at is None:
                problems.append(f"{task.task_id}: running without a worker or a start time")
            else:
                running_on[task.worker_id] += 1
        elif task.status == "pending" and task.worker_id is not None:
            problems.append(f"{task.task_id}: pending but held by {task.worker_id}")
    worker_ids = set()
    for worker in workers:
        worker_ids.add(worker.worker_id)
        if worker.current_load != running_on[worker.worker_id]:
            problems.append(
                f"worker {worker.worker_id}: current_load {worker.current_load} but "
                f"{running_on[worker.worker_id]} running tasks"
            )
        if not 0 <= worker.current_load <= worker.capacity:
            problems.append(
                f"worker {worker.worker_id}: load {worker.current_load} of {worker.capacity}"
            )
    for missing in sorted(set(running_on) - worker_ids):
        problems.append(f"tasks running on unknown worker {missing!r}")
    return problems


def status_counts(storage: Storage) -> Counter[str]:
    rows = storage.run(
        lambda uow: uow.connection.execute(select(task_t.c.status, task_t.c.task_id)).all()
    )
    return Counter(row.status for row in rows)


# --- killing our own server connection ------------------------------------------------------


def mysql_thread_id(connection: Connection) -> int:
    """The server's id of the connection (what CONNECTION_ID() returns inside it)."""
    return int(connection.connection.dbapi_connection.thread_id())  # type: ignore[union-attr]


def connection_id(connection: Connection) -> int:
    """The server's id of the connection: MySQL's thread id, PostgreSQL's backend pid."""
    if connection.dialect.name == "postgresql":
        return int(connection.connection.dbapi_connection.info.backend_pid)  # type: ignore[union-attr]
    return mysql_thread_id(connection)


class ConnectionKiller:
    """A second session on the same server: KILL, KILL QUERY, and a look at the lock waits.

    On PostgreSQL: pg_terminate_backend (waiting until the backend is gone) and
    pg_cancel_backend, and pg_stat_activity for the waits.
    """

    def __init__(self, url: URL) -> None:
        self.engine = create_engine(url, isolation_level="AUTOCOMMIT", pool_size=2)
        self.postgres = self.engine.dialect.name == "postgresql"
        self.kills = 0

    def kill(self, connection_id: int, *, query_only: bool = False) -> bool:
        """False when the connection was already gone."""
        if self.postgres:
            return self._signal(connection_id, query_only)
        what = "QUERY" if query_only else "CONNECTION"
        with self.engine.connect() as connection:
            try:
                connection.exec_driver_sql(f"KILL {what} {int(connection_id)}")
            except Exception as error:  # 1094: unknown thread id, it ended on its own
                if "1094" in str(error):
                    return False
                raise
        self.kills += 1
        return True

    def _signal(self, pid: int, query_only: bool) -> bool:
        statement = (
            "SELECT pg_cancel_backend(:pid)"
            if query_only
            else "SELECT pg_terminate_backend(:pid, 5000)"  # returns once the backend is gone
        )
        with self.engine.connect() as connection:
            done = bool(connection.execute(text(statement), {"pid": pid}).scalar())
        self.kills += done
        return done

    def connections_of(self, database: str) -> list[int]:
        with self.engine.connect() as connection:
            return [
                int(row[0])
                for row in connection.execute(
                    text(
                        "SELECT pid FROM pg_stat_activity "
                        "WHERE datname = :db AND pid <> pg_backend_pid()"
                        if self.postgres
                        else "SELECT id FROM information_schema.processlist "
                        "WHERE db = :db AND id <> CONNECTION_ID()"
                    ),
                    {"db": database},
                )
            ]

    def wait_for_lock_wait(self, token: str, timeout: float = 10.0) -> None:
        """Return once a statement containing ``token`` is blocked (running for a while).

        Found in the processlist by its text: MariaDB's innodb_trx is not reliable for a
        connection whose server thread was reused (stale thread ids, missing waits).
        """
        deadline = time.monotonic() + timeout
        query = text(
            "SELECT COUNT(*) FROM pg_stat_activity WHERE query LIKE :pattern "
            "AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()"
            if self.postgres
            else "SELECT COUNT(*) FROM information_schema.processlist "
            "WHERE info LIKE :pattern AND id <> CONNECTION_ID()"
        )
        while time.monotonic() < deadline:
            with self.engine.connect() as connection:
                if connection.execute(query, {"pattern": f"%{token}%"}).scalar():
                    time.sleep(0.05)  # past the lock request, into the wait
                    return
            time.sleep(0.01)
        raise AssertionError(f"no statement {token!r} waited for a lock")

    def wait_for_statement(self, connection_id: int, prefix: str, timeout: float = 10.0) -> None:
        """Return once the connection is running a statement that starts with ``prefix``."""
        deadline = time.monotonic() + timeout
        query = text(
            "SELECT query FROM pg_stat_activity WHERE pid = :id AND state = 'active'"
            if self.postgres
            else "SELECT info FROM information_schema.processlist WHERE id = :id"
        )
        while time.monotonic() < deadline:
            with self.engine.connect() as connection:
                info = connection.execute(query, {"id": connection_id}).scalar()
            if info is not None and str(info).upper().startswith(prefix.upper()):
                return
            time.sleep(0.01)
        raise AssertionError(f"connection {connection_id} never ran {prefix!r}")

    def close(self) -> None:
        self.engine.dispose()


Point = tuple[str, str]  # (when, statement head): ("before", "UPDATE task"), ("commit", "")


def statement_head(statement: str) -> str:
    words = statement.split()
    if not words:
        return ""
    verb = words[0].upper()
    table = ""
    upper = [word.upper() for word in words]
    for marker in ("INTO", "UPDATE", "FROM"):
        if marker in upper:
            index = upper.index(marker) + 1
            if index < len(words):
                table = words[index].strip("`(").split("(")[0]
                break
    return f"{verb} {table}".strip()


@contextmanager
def on_points(
    engine: Engine, action: Callable[[Connection, int, Point], None], *, after: bool = True
) -> Iterator[list[Point]]:
    """Call ``action(connection, index, point)`` at every statement and COMMIT on ``engine``.

    Points count from 1 in this order: before a statement, after it (when ``after``), and
    before COMMIT. The yielded list records every point passed.
    """
    seen: list[Point] = []

    def fire(connection: Connection, point: Point) -> None:
        seen.append(point)
        action(connection, len(seen), point)

    def before(conn: Connection, _c: Any, statement: str, *_a: Any) -> None:
        fire(conn, ("before", statement_head(statement)))

    def after_execute(conn: Connection, _c: Any, statement: str, *_a: Any) -> None:
        fire(conn, ("after", statement_head(statement)))

    def commit(conn: Connection) -> None:
        fire(conn, ("commit", ""))

    listeners: list[tuple[str, Callable[..., None]]] = [
        ("before_cursor_execute", before),
        ("commit", commit),
    ]
    if after:
        listeners.append(("after_cursor_execute", after_execute))
    for name, listener in listeners:
        event.listen(engine, name, listener)
    try:
        yield seen
    finally:
        for name, listener in listeners:
            event.remove(engine, name, listener)


# --- a second session that holds locks --------------------------------------------------------


class Adversary:
    """Runs ``script(connection, adversary)`` in its own thread and transaction, then rolls
    back.

    ``ready`` is set by the script when it holds what it meant to hold; a script may wait
    for ``release``; ``thread_id`` is its server connection id, so that the test can watch
    it, and ``token`` a tag for the text of its statements, so that the test can watch it
    wait for a lock.
    """

    def __init__(self, engine: Engine, script: Callable[[Connection, Adversary], None]) -> None:
        self.engine = engine
        self.script = script
        self.ready = threading.Event()
        self.release = threading.Event()
        self.thread_id = 0
        self.token = f"adversary-{uuid.uuid4().hex}"  # tags its statements
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            with self.engine.connect() as connection:
                self.thread_id = connection_id(connection)
                try:
                    self.script(connection, self)
                finally:
                    connection.rollback()
        except BaseException as error:  # reported by join()
            self.error = error
            self.ready.set()

    def start(self) -> Adversary:
        self._thread.start()
        if not self.ready.wait(10):
            raise AssertionError("the adversary never got its locks")
        if self.error is not None:
            raise AssertionError(f"the adversary failed: {self.error!r}")
        return self

    def join(self, timeout: float = 30) -> None:
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "the adversary is stuck"


# --- reporting --------------------------------------------------------------------------------


def report(config: pytest.Config, line: str) -> None:
    """A figure for the run's output, shown even under -q and output capture."""
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    capture = config.pluginmanager.get_plugin("capturemanager")
    if reporter is None or capture is None:  # pragma: no cover - unusual plugin setups
        print(f"[reliability] {line}")
        return
    with capture.global_and_fixture_disabled():
        reporter.ensure_newline()
        reporter.write_line(f"[reliability] {line}")


# --- the processes that get killed ---------------------------------------------------------------


# Short on purpose: a killed worker's tasks come back within two seconds.
def open_backend(
    request: pytest.FixtureRequest, backend: str, settings: QueueSettings
) -> tuple[Storage, URL]:
    """The test's own database on ``backend`` ("sqlite": a fresh file; "mysql", "postgres":
    an emptied scratch database), opened with ``settings``, and its URL for the child
    processes."""
    if backend in ("mysql", "postgres"):
        database: URL = request.getfixturevalue(f"{backend}_storage").engine.url
    else:
        database = request.getfixturevalue("sqlite_url")
    url = database.render_as_string(hide_password=False)
    return open_storage(url, upgrade=backend == "sqlite", queue_settings=settings), database


SHORT_SETTINGS = QueueSettings(
    heartbeat_interval=timedelta(seconds=1),
    missed_heartbeats=1,
    retry_jitter=0.0,
)


class Records:
    """An append-only file of one process's outcomes, one short line each.

    Each line is one ``os.write`` on an O_APPEND descriptor, so a SIGKILL loses at most
    the line that was not written yet, never half of one.
    """

    def __init__(self, path: str) -> None:
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def write(self, *words: object) -> None:
        os.write(self._fd, (" ".join(str(word) for word in words) + "\n").encode())


def read_records(directory: Path) -> list[list[str]]:
    lines: list[list[str]] = []
    for path in sorted(directory.glob("*.rec")):
        for line in path.read_text().splitlines():
            if line:
                lines.append(line.split(" ", 2))
    return lines


@dataclass
class RecordCheck:
    claims: int = 0
    completions: int = 0
    refused: int = 0
    transient: int = 0
    transient_unknown: int = 0  # of those, COMMITs whose outcome the caller cannot know
    self_kills: Counter[str] = field(default_factory=Counter)
    operations: Counter[str] = field(default_factory=Counter)
    enqueued: set[str] = field(default_factory=set)
    maybe_enqueued: set[str] = field(default_factory=set)
    completed: set[str] = field(default_factory=set)
    violations: list[str] = field(default_factory=list)


def check_records(lines: Sequence[list[str]]) -> RecordCheck:
    """What the processes saw: no attempt claimed twice, no task completed twice.

    C task retry_count: claim() returned it; D task: complete() returned True; R task:
    complete or fail refused (the attempt was taken back); Q/q task: enqueue returned /
    was tried; K point: the process killed itself there; T op: a TransientStorageError;
    E ...: an error nothing allows; O op: one operation finished.
    """
    result = RecordCheck()
    claimed: Counter[tuple[str, str]] = Counter()
    done: Counter[str] = Counter()
    for words in lines:
        kind = words[0]
        if kind == "C":
            claimed[(words[1], words[2])] += 1
            result.claims += 1
        elif kind == "D":
            done[words[1]] += 1
            result.completions += 1
        elif kind == "R":
            result.refused += 1
        elif kind == "Q":
            result.enqueued.add(words[1])
        elif kind == "q":
            result.maybe_enqueued.add(words[1])
        elif kind == "K":
            result.self_kills[" ".join(words[1:])] += 1
        elif kind == "T":
            result.transient += 1
            if words[-1] == "unknown":
                result.transient_unknown += 1
        elif kind == "O":
            result.operations[words[1]] += 1
        elif kind == "E":
            result.violations.append("unexpected error: " + " ".join(words[1:]))
    for (task_id, attempt), times in claimed.items():
        if times > 1:
            result.violations.append(f"{task_id} attempt {attempt} claimed {times} times")
    for task_id, times in done.items():
        if times > 1:
            result.violations.append(f"{task_id} completed {times} times")
    result.completed = set(done)
    return result


def _arm_self_kill(storage: Storage, kill_at: int, records: Records, current: list[str]) -> None:
    """SIGKILL this process at the ``kill_at``-th statement point, writing where first."""
    count = 0

    def tick(point: str) -> None:
        nonlocal count
        count += 1
        if count == kill_at:
            records.write("K", current[0], point)
            os.kill(os.getpid(), signal.SIGKILL)

    def before(_conn: Any, _c: Any, statement: str, *_a: Any) -> None:
        tick("before " + statement_head(statement))

    def after(_conn: Any, _c: Any, statement: str, *_a: Any) -> None:
        tick("after " + statement_head(statement))

    event.listen(storage.engine, "before_cursor_execute", before)
    event.listen(storage.engine, "after_cursor_execute", after)
    event.listen(storage.engine, "commit", lambda _conn: tick("commit"))
    # The connection goes back to the pool once its transaction has committed.
    event.listen(storage.engine.pool, "checkin", lambda *_args: tick("after-commit"))


def crash_worker(
    url: str, worker_id: str, seed: int, record_path: str, ready: Any, kill_at: int
) -> None:
    """Claim and complete forever; die by SIGKILL (our own at ``kill_at``, or the parent's)."""
    rng = random.Random(seed)
    records = Records(record_path)
    current = ["register"]
    try:
        storage = open_storage(url, queue_settings=SHORT_SETTINGS)
        storage.queue.register_worker(Worker(worker_id, "crash test", "127.0.0.1:0", capacity=4))
        if kill_at > 0:
            _arm_self_kill(storage, kill_at, records, current)
        ready.set()
        while True:
            current[0] = "claim"
            tasks = storage.queue.claim(worker_id, rng.randint(1, 3))
            for task in tasks:
                records.write("C", task.task_id, task.retry_count)
            if not tasks:
                time.sleep(0.01)
            for task in tasks:
                current[0] = "complete"
                if storage.queue.complete(task, {"by": worker_id}):
                    records.write("D", task.task_id)
                else:
                    records.write("R", task.task_id)
    except TransientStorageError as error:
        records.write("T", current[0], repr(error)[:200].replace("\n", " "))
        ready.set()
        time.sleep(60)  # the parent kills us
    except BaseException as error:
        records.write("E", current[0], repr(error)[:300].replace("\n", " "))
        raise


SOAK_TYPE = "soak"
SOAK_SETTINGS = QueueSettings(
    heartbeat_interval=timedelta(seconds=1),
    missed_heartbeats=2,
    max_retry_delay=1,
    retry_jitter=0.5,
)


def soak_actor(
    url: str, worker_id: str, seed: int, record_path: str, stop_at: float, ready: Any
) -> None:
    """Mixed traffic until ``stop_at`` (wall clock): enqueue, claim, complete (alone or with
    the next claim), fail, cancel, heartbeat and sweep, every outcome written to
    ``record_path``."""
    rng = random.Random(seed)
    records = Records(record_path)
    storage = open_storage(url, queue_settings=SOAK_SETTINGS)
    held: list[Task] = []
    mine: list[str] = []
    op = "register"
    while True:
        try:
            storage.queue.register_worker(
                Worker(worker_id, "soak actor", "127.0.0.1:0", capacity=rng.randint(2, 6))
            )
            break
        except TransientStorageError:
            records.write("T", op)
    ready.set()
    operations = [
        "enqueue",
        "claim",
        "complete",
        "complete_and_claim",
        "fail",
        "cancel",
        "heartbeat",
        "sweep",
    ]
    weights = [14, 25, 15, 10, 8, 3, 8, 2]
    while time.time() < stop_at:
        op = rng.choices(operations, weights)[0]
        if op in ("complete", "complete_and_claim", "fail") and not held:
            op = "claim"
        elif op == "cancel" and not mine:
            op = "enqueue"
        try:
            if op == "enqueue":
                batch = [
                    TaskRequest(
                        SOAK_TYPE,
                        {"n": rng.randint(0, 10**6), "by": worker_id},
                        priority=TaskPriority(rng.randint(0, 3)),
                        timeout=rng.randint(1, 3),
                        max_retry=rng.choice([0, 2, 50]),
                    )
                    for _ in range(rng.randint(1, 4))
                ]
                for request in batch:
                    records.write("q", request.task_id)
                for task in storage.queue.enqueue_many(batch):
                    records.write("Q", task.task_id)
                    mine.append(task.task_id)
            elif op == "claim":
                for task in storage.queue.claim(worker_id, rng.randint(1, 3)):
                    records.write("C", task.task_id, task.retry_count)
                    held.append(task)
            elif op == "complete":
                task = held.pop(rng.randrange(len(held)))
                if storage.queue.complete(task, {"ok": True}):
                    records.write("D", task.task_id)
                else:
                    records.write("R", task.task_id)
            elif op == "complete_and_claim":
                task = held.pop(rng.randrange(len(held)))
                completed, claimed = storage.queue.complete_and_claim(
                    task, {"ok": True}, rng.randint(1, 2)
                )
                records.write("D" if completed else "R", task.task_id)
                for task in claimed:
                    records.write("C", task.task_id, task.retry_count)
                    held.append(task)
            elif op == "fail":
                task = held.pop(rng.randrange(len(held)))
                if not storage.queue.fail(task, "soak failure", retry=rng.random() < 0.8):
                    records.write("R", task.task_id)
            elif op == "cancel":
                with suppress(IllegalTransitionError):  # already final: an expected answer
                    storage.queue.cancel(rng.choice(mine), "soak cancel")
            elif op == "heartbeat":
                still = storage.queue.heartbeat(worker_id)
                held = [task for task in held if task.task_id in still]
            elif op == "sweep":
                storage.queue.sweep()
            records.write("O", op)
        except TransientStorageError as error:
            records.write("T", op, "unknown" if error.outcome_unknown else "retryable")
        except Exception as error:
            records.write("E", op, repr(error)[:300].replace("\n", " "))
    storage.close()
