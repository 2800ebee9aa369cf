"""Connection faults on MySQL/MariaDB and PostgreSQL: KILL (pg_terminate_backend), KILL QUERY
(pg_cancel_backend), lock-wait timeouts, deadlocks, and (MySQL) restarts.

The rule under test: an operation hit by a fault is retried transparently or raises
:class:`TransientStorageError` (typed, with the driver error as its cause); it never leaves a
half-applied transition (a status without its log row, a load off by one); and the same
storage object serves the next operation with no restart.
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import URL, Connection, create_engine, event, select, text, update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.pool import NullPool

from asynctaskmanager import (
    ExecutorType,
    RetryStrategy,
    Storage,
    Task,
    TaskConfig,
    TaskLog,
    TaskStatus,
    TransactionRetry,
    TransientStorageError,
    Worker,
    open_storage,
)
from asynctaskmanager.domain.enums import LogType
from asynctaskmanager.infrastructure.dialects import pooling
from asynctaskmanager.infrastructure.expressions import db_now
from asynctaskmanager.infrastructure.schema import task_table as task_t
from asynctaskmanager.infrastructure.schema import worker_table as worker_t
from tests.conftest import empty_tables
from tests.support.faults import (
    Adversary,
    ConnectionKiller,
    Point,
    connection_id,
    consistency_violations,
    on_points,
    report,
    snapshot,
)

SERVERS = [
    pytest.param("mysql", marks=pytest.mark.mysql),
    pytest.param("postgres", marks=pytest.mark.postgres),
]

# What each server says when a connection is killed while in use (MySQL: killed, gone away,
# lost; PostgreSQL: admin_shutdown, or psycopg finding the link dead, without a SQLSTATE),
# and when a lock wait times out.
KILLED: dict[str, set[object]] = {"mysql": {1927, 2006, 2013}, "postgresql": {"57P01", None}}
LOCK_WAIT_TIMEOUT = {"mysql": 1205, "postgresql": "55P03"}


class CountingRetry(TransactionRetry):
    """The library's policy with a counter, and short pauses so that the tests stay fast."""

    def __init__(self, attempts: int) -> None:
        super().__init__(attempts=attempts, base_delay=0.001, max_delay=0.01)
        self.pauses = 0

    def pause(self, attempt: int) -> None:
        self.pauses += 1
        super().pause(attempt)


def driver_code(error: BaseException) -> int | str | None:
    """The MySQL error number, or the PostgreSQL SQLSTATE, at the bottom of ``error``'s cause
    chain."""
    cause: BaseException | None = error
    while cause is not None:
        if isinstance(cause, DBAPIError):
            if type(cause.orig).__module__.startswith("psycopg"):
                return getattr(cause.orig, "sqlstate", None)
            args = getattr(cause.orig, "args", ())
            return args[0] if args and isinstance(args[0], int) else None
        cause = cause.__cause__
    return None


def seed(storage: Storage) -> None:
    empty_tables(storage)
    storage.task_configs.create(
        TaskConfig("t", "fault test", ExecutorType.FUNCTION, RetryStrategy.FIXED, retry_delay=0)
    )
    storage.queue.register_worker(Worker("w1", "worker one", "10.0.0.1:1", capacity=5))


@pytest.fixture(params=SERVERS)
def server_url(request: pytest.FixtureRequest) -> URL:
    """The session's migrated database on each server."""
    return request.getfixturevalue(f"{request.param}_database_url")  # type: ignore[no-any-return]


@pytest.fixture
def killer(server_url: URL) -> Iterator[ConnectionKiller]:
    killer = ConnectionKiller(server_url)
    try:
        yield killer
    finally:
        killer.close()


def open_faulty(url: URL, attempts: int = 4, lock_wait: int | None = None) -> Storage:
    storage = open_storage(url, retry=CountingRetry(attempts))
    if lock_wait is not None:
        if storage.engine.dialect.name == "postgresql":
            setting = f"SET lock_timeout = {int(lock_wait) * 1000}"
        else:
            setting = f"SET SESSION innodb_lock_wait_timeout = {int(lock_wait)}"

        @event.listens_for(storage.engine, "connect")
        def _short_lock_wait(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute(setting)
            cursor.close()
            dbapi_connection.commit()  # PostgreSQL: a SET in a rolled-back transaction is undone

    seed(storage)
    return storage


@pytest.fixture
def faulty(server_url: URL) -> Iterator[Storage]:
    storage = open_faulty(server_url)
    try:
        yield storage
    finally:
        storage.close()


def retries(storage: Storage) -> CountingRetry:
    assert isinstance(storage.retry, CountingRetry)
    return storage.retry


# --- KILL between two statements of one unit of work ------------------------------------------


def test_kill_between_statements_is_retried_and_applied_once(
    faulty: Storage, killer: ConnectionKiller
) -> None:
    connections: list[int] = []

    def work(uow: Any) -> None:
        connections.append(connection_id(uow.connection))
        uow.tasks.create(Task("t", task_id="k1"))
        if len(connections) == 1:
            assert killer.kill(connections[0])
        uow.task_logs.create(TaskLog("k1", LogType.CREATED, None, TaskStatus.PENDING))

    faulty.run(work)
    assert len(connections) == 2
    assert connections[0] != connections[1]  # rerun on a fresh connection
    assert retries(faulty).pauses == 1
    assert faulty.tasks.count() == 1
    assert faulty.task_logs.count_for_task("k1") == 1
    assert consistency_violations(faulty) == []


def test_every_attempt_killed_surfaces_a_typed_error_and_the_storage_recovers(
    faulty: Storage, killer: ConnectionKiller
) -> None:
    attempts: list[int] = []

    def work(uow: Any) -> None:
        attempts.append(1)
        victim = connection_id(uow.connection)
        uow.tasks.create(Task("t", task_id=f"x{len(attempts)}"))
        killer.kill(victim)
        uow.connection.execute(text("SELECT 1"))

    before = snapshot(faulty)
    with pytest.raises(TransientStorageError) as info:
        faulty.run(work)
    assert len(attempts) == faulty.retry.attempts == 4
    assert not info.value.outcome_unknown
    assert driver_code(info.value) in KILLED[faulty.backend]
    assert snapshot(faulty) == before
    # The same object, no restart: the next operation goes through.
    task = faulty.queue.enqueue("t", task_id="after")
    assert faulty.tasks.get(task.task_id).status is TaskStatus.PENDING


def test_killed_idle_pooled_connection_is_replaced_silently(
    faulty: Storage, killer: ConnectionKiller, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pooling, "PING_AFTER_IDLE_SECONDS", 0.2)
    with faulty.engine.connect() as connection:
        pooled = connection_id(connection)
    assert killer.kill(pooled)
    time.sleep(0.3)
    faulty.queue.enqueue("t", task_id="p1")  # no error: the ping replaces the dead connection
    assert retries(faulty).pauses == 0
    with faulty.engine.connect() as connection:
        assert connection_id(connection) != pooled


def test_killed_busy_pooled_connection_costs_one_silent_rerun(
    faulty: Storage, killer: ConnectionKiller
) -> None:
    # Returned a moment ago, so not pinged: the first statement finds the link dead, and the
    # unit of work reruns on a fresh connection. Nothing reaches the caller.
    with faulty.engine.connect() as connection:
        pooled = connection_id(connection)
    assert killer.kill(pooled)
    task = faulty.queue.enqueue("t", task_id="p1")
    assert retries(faulty).pauses == 1
    assert faulty.tasks.get(task.task_id).status is TaskStatus.PENDING
    assert faulty.task_logs.count_for_task("p1") == 1


# --- KILL at every statement point of every queue operation -----------------------------------


@dataclass(frozen=True)
class Operation:
    name: str
    prepare: Callable[[Storage], Any]
    run: Callable[[Storage, Any], Any]
    applied: Callable[[Storage], bool]
    # Operations of several transactions may stop half way at a commit; the rest of the
    # work is done when the caller tries again.
    single_transaction: bool = True


def _claimed(storage: Storage, **options: Any) -> Task:
    storage.queue.enqueue("t", {"n": 1}, task_id="job", **options)
    [task] = storage.queue.claim("w1")
    return task


def _stale(storage: Storage) -> Task:
    """A task running on worker w1 whose heartbeat and start are an hour old."""
    task = _claimed(storage, timeout=5)
    with storage.engine.begin() as connection:
        # The database's clock, moved back in Python: date arithmetic differs per server.
        past = connection.execute(select(db_now())).scalar_one() - timedelta(hours=1)
        connection.execute(update(worker_t).values(last_heartbeat=past))
        connection.execute(update(task_t).values(started_at=past))
    return task


def _status(storage: Storage) -> TaskStatus:
    return storage.tasks.get("job").status


OPERATIONS = [
    Operation(
        "enqueue",
        lambda s: None,
        lambda s, _: s.queue.enqueue("t", {"n": 1}, task_id="job"),
        lambda s: s.tasks.find("job") is not None,
    ),
    Operation(
        "claim",
        lambda s: s.queue.enqueue("t", task_id="job"),
        lambda s, _: s.queue.claim("w1", 5),
        lambda s: _status(s) is TaskStatus.RUNNING,
    ),
    Operation(
        "complete",
        _claimed,
        lambda s, task: s.queue.complete(task, {"done": True}),
        lambda s: _status(s) is TaskStatus.COMPLETED,
    ),
    Operation(
        "fail-and-retry",
        _claimed,
        lambda s, task: s.queue.fail(task, "boom"),
        lambda s: s.tasks.get("job").retry_count == 1,
    ),
    Operation(
        "fail-for-good",
        lambda s: _claimed(s, max_retry=0),
        lambda s, task: s.queue.fail(task, "boom"),
        lambda s: _status(s) is TaskStatus.FAILED,
    ),
    Operation(
        "cancel-running",
        _claimed,
        lambda s, _: s.queue.cancel("job", "stop"),
        lambda s: _status(s) is TaskStatus.CANCELLED,
    ),
    Operation(
        "re-register",
        _claimed,
        lambda s, _: s.queue.register_worker(Worker("w1", "worker one", "10.0.0.1:1")),
        lambda s: _status(s) is TaskStatus.PENDING and s.workers.get("w1").current_load == 0,
        single_transaction=False,
    ),
    Operation(
        "deregister",
        _claimed,
        lambda s, _: s.queue.deregister_worker("w1"),
        lambda s: (
            _status(s) is TaskStatus.PENDING and s.workers.get("w1").status.value == "offline"
        ),
        single_transaction=False,
    ),
    Operation(
        "sweep",
        _stale,
        lambda s, _: s.queue.sweep(),
        lambda s: (
            _status(s) is TaskStatus.PENDING and s.workers.get("w1").status.value == "offline"
        ),
        single_transaction=False,
    ),
]


def _points_of(storage: Storage, operation: Operation) -> list[Point]:
    seed(storage)
    context = operation.prepare(storage)
    with on_points(storage.engine, lambda *_: None) as seen:
        operation.run(storage, context)
    assert operation.applied(storage)
    return list(seen)


def _breaks_a_commit(points: list[Point], index: int) -> bool:
    """A KILL at this point is first noticed by a COMMIT (whose outcome is then unknown)."""
    point = points[index - 1]
    following = points[index] if index < len(points) else ("commit", "")
    return point[0] == "commit" or (point[0] == "after" and following[0] == "commit")


@pytest.mark.parametrize("operation", OPERATIONS, ids=lambda op: op.name)
def test_kill_at_every_statement_point(
    request: pytest.FixtureRequest,
    server_url: URL,
    killer: ConnectionKiller,
    operation: Operation,
) -> None:
    storage = open_faulty(server_url)
    try:
        points = _points_of(storage, operation)
        assert points, "the operation ran no statement"
        outcomes = {"retried": 0, "raised": 0}
        for index, point in enumerate(points, start=1):
            seed(storage)
            context = operation.prepare(storage)
            pauses = retries(storage).pauses

            def kill_here(
                connection: Connection, at: int, _point: Point, index: int = index
            ) -> None:
                if at == index:
                    assert killer.kill(connection_id(connection))

            where = f"{operation.name}: KILL at point {index} of {len(points)} {point}"
            try:
                with on_points(storage.engine, kill_here):
                    operation.run(storage, context)
            except TransientStorageError as error:
                outcomes["raised"] += 1
                # Only a broken COMMIT is not retried: the server may have applied it.
                assert _breaks_a_commit(points, index), where
                assert error.outcome_unknown, where
                assert retries(storage).pauses == pauses, where
                assert consistency_violations(storage) == [], where
                if operation.single_transaction:
                    # Killed before COMMIT reached the server: nothing was applied.
                    assert not operation.applied(storage), where
                operation.run(storage, context)  # the caller's own retry, same storage
            else:
                outcomes["retried"] += 1
                assert not _breaks_a_commit(points, index), where
                assert retries(storage).pauses == pauses + 1, where
            assert operation.applied(storage), where
            assert consistency_violations(storage) == [], where
        assert outcomes["raised"] >= 1 and outcomes["retried"] >= 1
        kills = sum(outcomes.values())
        report(
            request.config,
            f"KILL {storage.backend} {operation.name}: {kills} points, "
            f"{outcomes['retried']} retried, {outcomes['raised']} raised (COMMIT), violations 0",
        )
    finally:
        storage.close()


def test_kill_at_commit_is_reported_not_retried_and_nothing_is_half_applied(
    faulty: Storage, killer: ConnectionKiller
) -> None:
    task = _claimed(faulty)
    before = snapshot(faulty)

    def kill_at_commit(connection: Connection, _at: int, point: Point) -> None:
        if point[0] == "commit":
            killer.kill(connection_id(connection))

    with on_points(faulty.engine, kill_at_commit), pytest.raises(TransientStorageError) as info:
        faulty.queue.complete(task, {"done": True})
    assert info.value.outcome_unknown
    assert info.value.retryable
    assert retries(faulty).pauses == 0  # an unknown outcome is the caller's call
    assert snapshot(faulty) == before  # killed before COMMIT reached the server
    # The caller retries: applied exactly once.
    assert faulty.queue.complete(task, {"done": True})
    assert not faulty.queue.complete(task, {"done": True})
    assert faulty.workers.get("w1").current_load == 0
    assert consistency_violations(faulty) == []


def test_kill_query_while_waiting_for_a_lock_is_retried(
    server_url: URL, faulty: Storage, killer: ConnectionKiller
) -> None:
    """KILL QUERY (1317) or pg_cancel_backend (57014) interrupts one statement; the unit of
    work is rolled back and rerun."""
    task = _claimed(faulty)
    other = create_engine(server_url)
    victim: list[int] = []

    def note(connection: Connection, _at: int, point: Point) -> None:
        if point == ("before", "UPDATE task") and not victim:
            victim.append(connection_id(connection))

    def hold(connection: Connection, adversary: Adversary) -> None:
        connection.execute(text("SELECT * FROM task WHERE task_id = 'job' FOR UPDATE"))
        adversary.ready.set()
        while not victim:
            time.sleep(0.01)
        killer.wait_for_statement(victim[0], "UPDATE task")
        time.sleep(0.1)  # into its lock wait
        assert killer.kill(victim[0], query_only=True)
        time.sleep(0.05)

    try:
        adversary = Adversary(other, hold).start()
        with on_points(faulty.engine, note):
            assert faulty.queue.complete(task, {"done": True})
        adversary.join()
    finally:
        other.dispose()
    assert retries(faulty).pauses >= 1
    assert _status(faulty) is TaskStatus.COMPLETED
    assert consistency_violations(faulty) == []


# --- lock-wait timeouts -------------------------------------------------------------------------


def _holder(statement: str, seconds: float) -> Callable[[Connection, Adversary], None]:
    """Take the lock, then hold it ``seconds`` or until released."""

    def hold(connection: Connection, adversary: Adversary) -> None:
        connection.execute(text(statement))
        adversary.ready.set()
        adversary.release.wait(seconds)

    return hold


def test_lock_wait_timeouts_are_retried_within_the_bound_then_typed(
    server_url: URL,
) -> None:
    storage = open_faulty(server_url, attempts=3, lock_wait=1)
    other = create_engine(server_url)
    try:
        task = _claimed(storage)
        before = snapshot(storage)
        adversary = Adversary(
            other, _holder("SELECT * FROM task WHERE task_id = 'job' FOR UPDATE", 8)
        ).start()
        started = time.monotonic()
        with pytest.raises(TransientStorageError) as info:
            storage.queue.complete(task, {"done": True})
        elapsed = time.monotonic() - started
        assert driver_code(info.value) == LOCK_WAIT_TIMEOUT[storage.backend]
        assert not info.value.outcome_unknown
        assert retries(storage).pauses == storage.retry.attempts - 1 == 2
        assert 3 <= elapsed < 8  # three waits of one second, not the holder's eight
        assert snapshot(storage) == before
        adversary.release.set()
        adversary.join()
        # Lock gone: the same storage completes the task.
        assert storage.queue.complete(task, {"done": True})
        assert consistency_violations(storage) == []
    finally:
        storage.close()
        other.dispose()


def test_lock_released_during_the_retries_lets_the_operation_through(
    server_url: URL,
) -> None:
    storage = open_faulty(server_url, attempts=4, lock_wait=1)
    other = create_engine(server_url)
    try:
        task = _claimed(storage)
        adversary = Adversary(
            other, _holder("SELECT * FROM worker WHERE worker_id = 'w1' FOR UPDATE", 1.5)
        ).start()
        assert storage.queue.complete(task, {"done": True})
        adversary.join()
        assert 1 <= retries(storage).pauses < storage.retry.attempts
        assert _status(storage) is TaskStatus.COMPLETED
        assert storage.workers.get("w1").current_load == 0
        assert consistency_violations(storage) == []
    finally:
        storage.close()
        other.dispose()


# --- deadlocks --------------------------------------------------------------------------------


def _deadlock_at_release(
    other: Any, killer: ConnectionKiller, every_attempt: bool
) -> tuple[Callable[[Connection, int, Point], None], list[Adversary]]:
    """Before complete() updates the worker row, a second session locks that row and then
    waits for the task row that complete() already changed: a deadlock. The second session
    has written more (twenty log rows, rolled back later), so InnoDB picks ours as victim."""
    adversaries: list[Adversary] = []

    def script(connection: Connection, adversary: Adversary) -> None:
        for n in range(20):
            connection.execute(
                text(
                    "INSERT INTO task_log (log_id, task_id, log_type) "
                    "VALUES (:id, 'adversary', 'info')"
                ),
                {"id": f"adv-{adversary.thread_id}-{n}"},
            )
        connection.execute(text("SELECT * FROM worker WHERE worker_id = 'w1' FOR UPDATE"))
        adversary.ready.set()
        connection.execute(
            text(f"SELECT /* {adversary.token} */ * FROM task WHERE task_id = 'job' FOR UPDATE")
        )

    def action(connection: Connection, _at: int, point: Point) -> None:
        if point != ("before", "UPDATE worker"):
            return
        if adversaries and not every_attempt:
            return
        for previous in adversaries:
            previous.join()
        adversary = Adversary(other, script).start()
        adversaries.append(adversary)
        killer.wait_for_lock_wait(adversary.token)

    return action, adversaries


@pytest.mark.mysql
@pytest.mark.parametrize("every_attempt", [False, True], ids=["once", "every-attempt"])
def test_deadlock_is_retried_then_typed(mysql_database_url: URL, every_attempt: bool) -> None:
    """MySQL only: InnoDB picks the victim by the work done, so the adversary's twenty rows
    make ours the victim. PostgreSQL cancels the waiter whose deadlock_timeout ends first,
    the adversary here; our own deadlocks are tested below on both."""
    storage = open_faulty(mysql_database_url, attempts=3)
    other = create_engine(mysql_database_url)
    killer = ConnectionKiller(mysql_database_url)
    try:
        task = _claimed(storage)
        before = snapshot(storage)
        action, adversaries = _deadlock_at_release(other, killer, every_attempt)
        with on_points(storage.engine, action):
            if every_attempt:
                with pytest.raises(TransientStorageError) as info:
                    storage.queue.complete(task, {"done": True})
                assert driver_code(info.value) == 1213
                assert len(adversaries) == storage.retry.attempts == 3
            else:
                assert storage.queue.complete(task, {"done": True})
                assert len(adversaries) == 1
        for adversary in adversaries:
            adversary.join()
        assert retries(storage).pauses == len(adversaries) - (1 if every_attempt else 0)
        if every_attempt:
            assert snapshot(storage) == before
            assert storage.queue.complete(task, {"done": True})  # same storage, no restart
        assert _status(storage) is TaskStatus.COMPLETED
        assert storage.task_logs.count_for_task("adversary") == 0
        assert consistency_violations(storage) == []
    finally:
        storage.close()
        other.dispose()
        killer.close()


def test_two_units_of_work_locking_in_opposite_orders_both_commit(faulty: Storage) -> None:
    """A real deadlock between two of our own transactions: the victim is rerun."""
    faulty.queue.enqueue("t", task_id="a")
    faulty.queue.enqueue("t", task_id="b")
    barrier = threading.Barrier(2, timeout=10)
    errors: list[BaseException] = []

    def mover(first: str, second: str) -> Callable[[Any], None]:
        calls = [0]

        def work(uow: Any) -> None:
            calls[0] += 1
            uow.connection.execute(
                text("UPDATE task SET priority = priority + 1 WHERE task_id = :id"), {"id": first}
            )
            if calls[0] == 1:
                barrier.wait()
            uow.connection.execute(
                text("UPDATE task SET priority = priority + 1 WHERE task_id = :id"),
                {"id": second},
            )

        return work

    def run(work: Callable[[Any], None]) -> None:
        try:
            faulty.run(work)
        except BaseException as error:
            errors.append(error)

    threads = [
        threading.Thread(target=run, args=(mover("a", "b"),)),
        threading.Thread(target=run, args=(mover("b", "a"),)),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert errors == []
    assert retries(faulty).pauses >= 1  # one of them was the deadlock victim
    # Each unit of work applied exactly once: +2 on both rows, none lost, none doubled.
    assert int(faulty.tasks.get("a").priority) == 1 + 2
    assert int(faulty.tasks.get("b").priority) == 1 + 2


# --- a server restart ---------------------------------------------------------------------------

RESTART_STOP_ENV = "ASYNCTASK_TEST_MYSQL_STOP"
RESTART_START_ENV = "ASYNCTASK_TEST_MYSQL_START"


def _server_answers(url: URL) -> bool:
    engine = create_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
        return True
    except DBAPIError:
        return False
    finally:
        engine.dispose()


def _wait_until(condition: Callable[[], bool], failure: str, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, failure
        time.sleep(0.2)


def _heartbeat_fails(storage: Storage) -> bool:
    try:
        storage.queue.heartbeat("w1")
    except TransientStorageError:
        return True
    return False


@pytest.mark.mysql
@pytest.mark.restart
def test_server_restart_between_operations_recovers_by_itself(mysql_server_url: URL) -> None:
    """Stops and starts the server (commands from the environment), so it is deselected by
    default: ``pytest -m restart`` with ASYNCTASK_TEST_MYSQL_STOP / _START set.

    Its database is its own, created and dropped through engines without a pool, because
    every pooled connection opened before the restart is dead after it.
    """
    stop, start = os.environ.get(RESTART_STOP_ENV), os.environ.get(RESTART_START_ENV)
    if not stop or not start:
        pytest.skip(f"set {RESTART_STOP_ENV} and {RESTART_START_ENV} to restart the server")
    name = f"atm_restart_{uuid.uuid4().hex[:12]}"
    admin = create_engine(mysql_server_url, poolclass=NullPool)
    with admin.begin() as connection:
        connection.execute(text(f"CREATE DATABASE {name} CHARACTER SET utf8mb4"))
    url = mysql_server_url.set(database=name)
    open_storage(url, upgrade=True).close()
    storage = open_faulty(url, attempts=3)
    try:
        task = _claimed(storage)
        # Several pooled connections, all of which the restart will break.
        connections = [storage.engine.connect() for _ in range(3)]
        for connection in connections:
            connection.close()
        subprocess.run(stop, shell=True, check=True, timeout=120)
        try:
            # The shutdown command returns, and new connections are refused, while the server
            # may still serve the open ones for a moment (seen in CI): an operation must fail
            # with TransientStorageError (nothing rawer) once they are gone too.
            _wait_until(lambda: _heartbeat_fails(storage), "operations went on after the stop")
        finally:
            subprocess.run(start, shell=True, check=True, timeout=120)
            _wait_until(lambda: _server_answers(url), "the server did not come back")
        # The same storage object, no reopen: every operation goes through.
        assert storage.queue.heartbeat("w1") == {"job"}
        assert storage.queue.complete(task, {"done": True})
        storage.queue.enqueue("t", task_id="after-restart")
        assert storage.tasks.count() == 2
        assert consistency_violations(storage) == []
    finally:
        storage.close()
        with admin.begin() as connection:
            connection.execute(text(f"DROP DATABASE IF EXISTS {name}"))
