"""What every benchmark shares: where the databases live, raw connections, loaders, timing.

Three backends: ``memory`` (SQLite in memory), ``sqlite`` (a file, WAL) and ``mariadb``. Ours
and the raw driver each get their own database, migrated by the library's own migrations, so
both work on the same schema and the same indexes. A measurement starts from empty tables:
SQLite files are copies of one migrated template, MariaDB tables are truncated.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import shutil
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from sqlalchemy import URL, create_engine, make_url, text

from asynctaskmanager import ExecutorType, Storage, TaskConfig, Worker, open_storage
from asynctaskmanager.infrastructure.schema import task_log_table, task_table

BACKENDS = ("memory", "sqlite", "mariadb")
TASK_TYPE = "bench"
TABLES = ("task_log", "task", "worker", "task_config")
MYSQL_URL_ENV = "ATM_BENCH_MYSQL_URL"
DEFAULT_MYSQL_URL = "mysql+mysqldb://root@127.0.0.1:3306"
# Same session settings as the library's engine (asynctaskmanager/infrastructure/dialects/).
MYSQL_SQL_MODE = (
    "STRICT_ALL_TABLES,NO_ZERO_DATE,NO_ZERO_IN_DATE,ERROR_FOR_DIVISION_BY_ZERO,"
    "NO_ENGINE_SUBSTITUTION"
)
MYSQL_INIT = f"SET time_zone = '+00:00', sql_mode = '{MYSQL_SQL_MODE}'"
# The queue's max_concurrent and a worker's capacity must never be what limits a benchmark.
UNLIMITED = 1_000_000

# Table order: the raw driver writes positional rows.
TASK_COLUMNS = tuple(task_table.c.keys())
LOG_COLUMNS = tuple(task_log_table.c.keys())


def payload(i: int) -> dict[str, Any]:
    """The payload every benchmark enqueues: small, like most real task arguments."""
    return {"to": f"user{i}@example.com", "template": "welcome", "n": i}


RESULT = {"ok": True}


# --- where the databases live ----------------------------------------------------------------


@dataclass(frozen=True)
class Locator:
    """Where one benchmark database is; picklable, so a worker process can open it too."""

    backend: str
    path: str | None = None  # SQLite file
    url: str | None = None  # MariaDB database URL (SQLAlchemy form)

    @property
    def shareable(self) -> bool:
        return self.backend != "memory"


class Site:
    """The run's databases: a temp directory for SQLite files, databases on the MariaDB server.

    Created on entry, removed on exit (the MariaDB databases are dropped).
    """

    def __init__(
        self, mysql_url: str | None = None, *, keep: bool = False, db_suffix: str = ""
    ) -> None:
        self.mysql_server = make_url(mysql_url or os.environ.get(MYSQL_URL_ENV, DEFAULT_MYSQL_URL))
        if not re.fullmatch(r"[a-z0-9_]*", db_suffix):
            raise ValueError(f"db_suffix must be lowercase letters, digits, _: {db_suffix!r}")
        # Two runs on one server (a shared machine) must not truncate each other's tables.
        self.db_suffix = db_suffix
        self.keep = keep
        self.dir = tempfile.mkdtemp(prefix="atm-bench-")
        self.template = os.path.join(self.dir, "template.db")
        self._counter = itertools.count()
        self._mysql_databases: set[str] = set()
        self._migrated: set[str] = set()
        self._memory_template: sqlite3.Connection | None = None
        self.mysql_available = False

    def __enter__(self) -> Site:
        storage = open_storage(f"sqlite:///{self.template}", upgrade=True)
        storage.close()
        try:
            self._admin(lambda c: c.execute(text("SELECT 1")))
            self.mysql_available = True
        except Exception as error:
            print(f"MariaDB not reachable at {self.mysql_server!r}: {error}; skipping it")
        return self

    def __exit__(self, *exc_info: object) -> None:
        for name in sorted(self._mysql_databases):
            if not self.keep:
                self._drop(name)
        if not self.keep:
            shutil.rmtree(self.dir, ignore_errors=True)

    def _drop(self, name: str) -> None:
        self._admin(lambda connection: connection.execute(text(f"DROP DATABASE IF EXISTS {name}")))

    def _admin(self, action: Callable[[Any], Any]) -> Any:
        engine = create_engine(self.mysql_server)
        try:
            with engine.begin() as connection:
                return action(connection)
        finally:
            engine.dispose()

    # --- SQLite --------------------------------------------------------------------------

    def sqlite_copy(self, role: str) -> Locator:
        path = os.path.join(self.dir, f"{role}-{next(self._counter)}.db")
        shutil.copyfile(self.template, path)
        return Locator("sqlite", path=path)

    def memory_template(self) -> sqlite3.Connection:
        if self._memory_template is None:
            self._memory_template = sqlite3.connect(self.template)
        return self._memory_template

    # --- MariaDB -------------------------------------------------------------------------

    def mysql_database(self, name: str, *, migrate: bool = True, fresh: bool = False) -> Locator:
        """``name`` on the server, migrated once per run; its tables emptied on every call.

        The name carries this run's process id, so that two runs on one server (an A/B
        comparison beside another benchmark) never drop each other's databases."""
        name = f"{name}_{os.getpid()}"
        name += self.db_suffix
        if name not in self._mysql_databases or fresh:
            self._admin(lambda c: c.execute(text(f"DROP DATABASE IF EXISTS {name}")))
            self._admin(lambda c: c.execute(text(f"CREATE DATABASE {name} CHARACTER SET utf8mb4")))
            self._mysql_databases.add(name)
            self._migrated.discard(name)
        url = self.mysql_server.set(database=name)
        if migrate and name not in self._migrated:
            open_storage(url, upgrade=True).close()
            self._migrated.add(name)
        elif migrate:
            truncate_mysql(url)
        return Locator("mariadb", url=url.render_as_string(hide_password=False))

    def mysql_version(self) -> str:
        if not self.mysql_available:
            return "not available"
        return str(self._admin(lambda c: c.execute(text("SELECT VERSION()")).scalar_one()))

    # --- one database for one measurement -------------------------------------------------

    def fresh(self, backend: str, role: str) -> Locator:
        """An empty, migrated database for ``role`` ('ours' or 'raw') on ``backend``."""
        if backend == "memory":
            return Locator("memory")
        if backend == "sqlite":
            return self.sqlite_copy(role)
        return self.mysql_database(f"atm_bench_{role}" if role != "ours" else "atm_bench")


def truncate_mysql(url: URL | str) -> None:
    engine = create_engine(url)
    try:
        with engine.begin() as connection:
            for table in TABLES:
                connection.execute(text(f"TRUNCATE TABLE {table}"))
    finally:
        engine.dispose()


# --- our store -------------------------------------------------------------------------------


def open_ours(locator: Locator) -> Storage:
    if locator.backend == "memory":
        return open_storage("memory")
    if locator.backend == "sqlite":
        return open_storage(f"sqlite:///{locator.path}")
    assert locator.url is not None
    return open_storage(locator.url)


def seed_ours(storage: Storage) -> None:
    storage.task_configs.create(
        TaskConfig(TASK_TYPE, "Benchmark task", ExecutorType.FUNCTION, max_concurrent=UNLIMITED)
    )


def register_ours(storage: Storage, worker_id: str, capacity: int = UNLIMITED) -> None:
    storage.queue.register_worker(
        Worker(worker_id, f"bench {worker_id}", "127.0.0.1:0", capacity=capacity)
    )


# --- raw connections ------------------------------------------------------------------------


class Raw:
    """A driver connection and the few dialect differences the raw SQL needs.

    SQLite: autocommit mode with explicit ``BEGIN IMMEDIATE`` (as the library), WAL for
    files, and the library's pragmas. MariaDB: utf8mb4, UTC session, strict SQL mode,
    READ COMMITTED (as the library), autocommit off. PostgreSQL (psycopg 3): UTC session,
    READ COMMITTED, autocommit off, and the library's clock (the statement's start, in whole
    seconds; CURRENT_TIMESTAMP there is the transaction's).
    """

    def __init__(self, locator: Locator, memory_template: sqlite3.Connection | None = None):
        self.backend = locator.backend
        self.sqlite = locator.backend in ("memory", "sqlite")
        if self.sqlite:
            if locator.backend == "memory":
                conn = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
                assert memory_template is not None
                memory_template.backup(conn)
            else:
                assert locator.path is not None
                conn = sqlite3.connect(
                    locator.path, isolation_level=None, timeout=30, check_same_thread=False
                )
                conn.execute("PRAGMA journal_mode = WAL")
                conn.execute("PRAGMA synchronous = NORMAL")
            conn.execute("PRAGMA foreign_keys = ON")
            conn.execute("PRAGMA busy_timeout = 30000")
            self.conn: Any = conn
            self.p = "?"
            self.for_update = ""
            self.skip_locked = ""
        elif locator.backend == "postgresql":
            import psycopg

            assert locator.url is not None
            url = make_url(locator.url)
            self.conn = psycopg.connect(
                host=url.host or "127.0.0.1",
                port=url.port or 5432,
                user=url.username or "postgres",
                password=url.password or "",
                dbname=url.database or "",
                options="-c timezone=UTC",
            )
            self.conn.isolation_level = psycopg.IsolationLevel.READ_COMMITTED
            self.p = "%s"
            self.for_update = " FOR UPDATE"
            self.skip_locked = " FOR UPDATE SKIP LOCKED"
        else:
            import MySQLdb  # type: ignore[import-untyped]

            assert locator.url is not None
            url = make_url(locator.url)
            self.conn = MySQLdb.connect(
                host=url.host or "127.0.0.1",
                port=url.port or 3306,
                user=url.username or "root",
                password=url.password or "",
                database=url.database or "",
                charset="utf8mb4",
                init_command=MYSQL_INIT,
                client_flag=2,  # CLIENT_FOUND_ROWS: rowcount counts matched rows, as the library
            )
            self.conn.autocommit(False)
            cursor = self.conn.cursor()
            cursor.execute("SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED")
            cursor.close()
            self.p = "%s"
            self.for_update = " FOR UPDATE"
            self.skip_locked = " FOR UPDATE SKIP LOCKED"
        self.cur = self.conn.cursor()
        self.now = (
            "date_trunc('second', statement_timestamp())"
            if locator.backend == "postgresql"
            else "CURRENT_TIMESTAMP"
        )

    def autocommit(self, on: bool) -> None:
        if self.backend == "postgresql":
            self.conn.autocommit = on
        elif not self.sqlite:
            self.conn.autocommit(on)

    def begin(self) -> None:
        if self.sqlite:
            self.cur.execute("BEGIN IMMEDIATE")

    def commit(self) -> None:
        self.conn.commit() if not self.sqlite else self.cur.execute("COMMIT")

    def rollback(self) -> None:
        self.conn.rollback() if not self.sqlite else self.cur.execute("ROLLBACK")

    def marks(self, n: int) -> str:
        return ", ".join([self.p] * n)

    def close(self) -> None:
        self.cur.close()
        self.conn.close()


def driver_connection(storage: Storage) -> tuple[Any, Any]:
    """The DBAPI connection under ``storage`` (for loading rows fast) and its pool wrapper."""
    proxy = storage.engine.raw_connection()
    return proxy.driver_connection, proxy


def seed_raw(raw: Raw) -> None:
    """The same task_config row as :func:`seed_ours`, written with the driver."""
    raw.begin()
    raw.cur.execute(
        "INSERT INTO task_config (task_type, task_name, executor_type, retry_strategy, "
        "default_timeout, default_max_retry, retry_delay, backoff_rate, max_concurrent, enabled)"
        f" VALUES ({raw.marks(10)})",
        (TASK_TYPE, "Benchmark task", "function", "exponential", 30, 3, 5, "2.00", UNLIMITED, True),
    )
    raw.commit()


def register_raw(raw: Raw, worker_id: str, capacity: int = UNLIMITED) -> None:
    raw.begin()
    raw.cur.execute(
        "INSERT INTO worker (worker_id, worker_name, address, status, capacity, current_load, "
        f"supported_types, last_heartbeat) VALUES ({raw.marks(7)}, {raw.now})",
        (worker_id, f"bench {worker_id}", "127.0.0.1:0", "online", capacity, 0, None),
    )
    raw.commit()


# --- loading rows fast ----------------------------------------------------------------------

_counter = itertools.count()


def fast_id() -> str:
    """A raw program's id: time-ordered, unique across processes, 26 hex characters."""
    return f"{time.time_ns() // 1_000_000:012x}{os.getpid() & 0xFFFFFF:06x}{next(_counter):08x}"


def fmt_ts(value: datetime, sqlite: bool) -> Any:
    """A UTC instant the way the library stores it (SQLite text, MariaDB naive UTC)."""
    naive = value.astimezone(timezone.utc).replace(tzinfo=None, microsecond=0)
    return naive.strftime("%Y-%m-%d %H:%M:%S") if sqlite else naive


def load_tasks(
    conn: Any,
    sqlite: bool,
    statuses: Sequence[tuple[str, bool]],
    *,
    worker_id: str | None = None,
    batch: int = 5000,
) -> int:
    """Insert one task per (status, scheduled_in_future) with the driver, in batches.

    Priorities and creation times are spread pseudo-randomly, so that pending, future and
    finished rows interleave in the claim order as they would in a live table.
    """
    now = datetime.now(timezone.utc)
    p = "?" if sqlite else "%s"
    sql = f"INSERT INTO task ({', '.join(TASK_COLUMNS)}) VALUES ({', '.join([p] * 15)})"
    cursor = conn.cursor()
    rows: list[tuple[Any, ...]] = []
    total = 0

    def flush() -> None:
        if sqlite:
            cursor.execute("BEGIN IMMEDIATE")
        cursor.executemany(sql, rows)
        if sqlite:
            cursor.execute("COMMIT")
        else:
            conn.commit()

    for i, (status, future) in enumerate(statuses):
        created = now - timedelta(seconds=3600 + (i * 7919) % 2_592_000)
        finished = status in ("completed", "failed", "cancelled")
        rows.append(
            (
                fast_id(),
                TASK_TYPE,
                (i * 31) % 4,
                status,
                json.dumps(payload(i), separators=(",", ":")),
                json.dumps(RESULT) if status == "completed" else None,
                None,
                worker_id if status != "pending" else None,
                0,
                3,
                30,
                fmt_ts(created, sqlite),
                fmt_ts(now + timedelta(days=1), sqlite) if future else None,
                fmt_ts(created, sqlite) if status != "pending" else None,
                fmt_ts(created + timedelta(seconds=1), sqlite) if finished else None,
            )
        )
        if len(rows) >= batch:
            flush()
            total += len(rows)
            rows = []
    if rows:
        flush()
        total += len(rows)
    cursor.close()
    return total


def pending(n: int) -> list[tuple[str, bool]]:
    return [("pending", False)] * n


# --- timing ----------------------------------------------------------------------------------


def timed_loop(op: Callable[[int], Any], max_ops: int, max_seconds: float) -> tuple[int, float]:
    """Run ``op(i)`` until ``max_ops`` calls or ``max_seconds``; return (calls, seconds)."""
    clock = time.perf_counter
    start = clock()
    deadline = start + max_seconds
    done = 0
    for i in range(max_ops):
        op(i)
        done = i + 1
        if (done & 7) == 0 and clock() > deadline:
            break
    return done, clock() - start


def percentile(samples: Sequence[float], q: float) -> float:
    ordered = sorted(samples)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


def median(samples: Sequence[float]) -> float:
    return statistics.median(samples) if samples else float("nan")


def chunks(n: int, size: int) -> Iterator[int]:
    while n > 0:
        yield min(size, n)
        n -= size
