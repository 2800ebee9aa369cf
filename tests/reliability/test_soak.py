"""Soak: 8 processes of mixed traffic under random faults, then the invariants.

Each process enqueues, claims, completes, fails, cancels, heartbeats and sweeps at random.
Meanwhile this process injects faults: it KILLs a random connection of the soak database
(MySQL; pg_terminate_backend on PostgreSQL) from a side thread, and SIGKILLs a random worker
process, which is respawned (under its old worker id half of the time, so that
re-registration takes its tasks back).

Afterwards, with every process stopped and the sweep run until nothing moves: no task
completed twice, no attempt claimed twice, no enqueued task lost, every status change has
its log row, and every worker's load is its running-task count.

Deselected by default. ``ASYNCTASK_SOAK_SECONDS`` (default 120) is the whole run, split
evenly between the SQLite file, MySQL and PostgreSQL::

    ASYNCTASK_TEST_MYSQL_URL=mysql://root@127.0.0.1/test pytest -m soak            # 2 min
    ASYNCTASK_SOAK_SECONDS=1800 ASYNCTASK_TEST_MYSQL_URL=... pytest -m soak        # 30 min
"""

from __future__ import annotations

import multiprocessing
import os
import random
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import URL, select

from asynctaskmanager import (
    ExecutorType,
    RetryStrategy,
    Storage,
    TaskConfig,
    TaskStatus,
)
from asynctaskmanager.infrastructure.schema import task_table
from tests.support.faults import (
    SOAK_SETTINGS,
    SOAK_TYPE,
    ConnectionKiller,
    check_records,
    consistency_violations,
    open_backend,
    read_records,
    report,
    soak_actor,
    status_counts,
)

SECONDS = float(os.environ.get("ASYNCTASK_SOAK_SECONDS", "120"))
BACKENDS = 3  # sqlite, mysql, postgres
ACTORS = 8


class Faults:
    """Connection KILLs from a side thread (MySQL only) and SIGKILLs with respawn."""

    def __init__(self, url: URL | None, database: str | None, seed: int) -> None:
        self.rng = random.Random(seed)
        self.killer = ConnectionKiller(url) if url is not None else None
        self.database = database
        self.connection_kills = 0
        self.stop = threading.Event()
        self.errors: list[BaseException] = []
        self.thread = threading.Thread(target=self._kill_connections, daemon=True)

    def _kill_connections(self) -> None:
        assert self.killer is not None and self.database is not None
        try:
            while not self.stop.wait(self.rng.uniform(0.1, 0.8)):
                victims = self.killer.connections_of(self.database)
                if victims and self.killer.kill(self.rng.choice(victims)):
                    self.connection_kills += 1
        except BaseException as error:
            self.errors.append(error)

    def __enter__(self) -> Faults:
        if self.killer is not None:
            self.thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop.set()
        if self.killer is not None:
            self.thread.join(10)
            self.killer.close()


def _spawn(context: Any, url: str, worker_id: str, seed: int, path: Path, stop_at: float) -> Any:
    ready = context.Event()
    process = context.Process(
        target=soak_actor,
        args=(url, worker_id, seed, str(path), stop_at, ready),
        daemon=True,
    )
    process.start()
    process.ready = ready  # the child unpickles it later: keep it alive until then
    return process


def _sweep_until_stable(storage: Storage) -> int:
    deadline = time.monotonic() + 60
    rounds = 0
    while True:
        time.sleep(1.1)
        sweep = storage.queue.sweep()
        rounds += 1
        if status_counts(storage)[TaskStatus.RUNNING.value] == 0 and not (
            sweep.requeued or sweep.failed
        ):
            return rounds
        assert time.monotonic() < deadline, "tasks still running a minute after the stop"


@pytest.mark.soak
@pytest.mark.concurrency
@pytest.mark.parametrize(
    "backend",
    [
        "sqlite",
        pytest.param("mysql", marks=pytest.mark.mysql),
        pytest.param("postgres", marks=pytest.mark.postgres),
    ],
)
def test_soak_with_random_faults(
    request: pytest.FixtureRequest, tmp_path: Path, backend: str
) -> None:
    duration = SECONDS / BACKENDS
    storage, database = open_backend(request, backend, SOAK_SETTINGS)
    url = database.render_as_string(hide_password=False)
    server = database if backend != "sqlite" else None  # connection KILLs need a server
    records = tmp_path / "records"
    records.mkdir()
    rng = random.Random(int.from_bytes(os.urandom(4), "big"))
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["asynctaskmanager", "sqlalchemy", "tests.support.faults"])
    process_kills = respawns_same_id = 0
    try:
        storage.task_configs.create(
            TaskConfig(
                SOAK_TYPE,
                "soak",
                ExecutorType.FUNCTION,
                RetryStrategy.EXPONENTIAL,
                retry_delay=1,
                max_concurrent=20,
            )
        )
        stop_at = time.time() + duration
        incarnation = 0
        actors: dict[str, Any] = {}
        for n in range(ACTORS):
            incarnation += 1
            worker_id = f"actor-{n}"
            path = records / f"{incarnation}.rec"
            actors[worker_id] = _spawn(context, url, worker_id, rng.getrandbits(32), path, stop_at)

        with Faults(server, database.database if server else None, rng.getrandbits(32)) as faults:
            next_kill = time.time() + rng.uniform(1, 4)
            while time.time() < stop_at - 1:
                time.sleep(0.05)
                if time.time() < next_kill:
                    continue
                next_kill = time.time() + rng.uniform(1, 4)
                worker_id = rng.choice(sorted(actors))
                victim = actors.pop(worker_id)
                victim.kill()
                victim.join(10)
                process_kills += 1
                incarnation += 1
                if rng.random() < 0.5:
                    respawns_same_id += 1
                else:
                    worker_id = f"actor-{incarnation}"
                path = records / f"{incarnation}.rec"
                actors[worker_id] = _spawn(
                    context, url, worker_id, rng.getrandbits(32), path, stop_at
                )
            assert faults.errors == []
            connection_kills = faults.connection_kills

        stragglers = 0
        for process in actors.values():
            process.join(max(5.0, stop_at - time.time() + 30))
            if process.exitcode is None:
                stragglers += 1
                process.kill()
                process.join(10)
        rounds = _sweep_until_stable(storage)

        seen = check_records(read_records(records))
        violations = list(seen.violations)
        violations += consistency_violations(storage)
        in_database = set(
            storage.run(
                lambda uow: uow.connection.execute(select(task_table.c.task_id)).scalars().all()
            )
        )
        violations += [f"{task_id}: enqueued, then lost" for task_id in seen.enqueued - in_database]
        violations += [
            f"{task_id}: in the database, never enqueued"
            for task_id in in_database - seen.maybe_enqueued
        ]
        completed = set(
            storage.run(
                lambda uow: (
                    uow.connection.execute(
                        select(task_table.c.task_id).where(
                            task_table.c.status == TaskStatus.COMPLETED.value
                        )
                    )
                    .scalars()
                    .all()
                )
            )
        )
        violations += [
            f"{task_id}: complete() said yes but the task is not completed"
            for task_id in seen.completed - completed
        ]
        if stragglers:
            violations.append(f"{stragglers} processes did not stop on time")
        statuses = status_counts(storage)
        operations = sum(seen.operations.values())
        report(
            request.config,
            f"soak {backend} {duration:.0f} s: {operations} operations "
            f"({', '.join(f'{n} {op}' for op, n in seen.operations.most_common())}), "
            f"faults: {connection_kills} connection KILLs, {process_kills} process SIGKILLs "
            f"({respawns_same_id} respawned under the same id), {seen.transient} "
            f"TransientStorageErrors seen by callers ({seen.transient_unknown} at a COMMIT of "
            f"unknown outcome); {len(in_database)} tasks "
            f"{dict(sorted(statuses.items()))}; sweeps to settle {rounds}; "
            f"violations {len(violations)}",
        )
        assert violations == []
        assert operations > 0 and seen.completions > 0
        assert process_kills >= 1
        if server is not None:
            assert connection_kills >= 1
    finally:
        storage.close()


def test_the_record_check_catches_doubles(tmp_path: Path) -> None:
    """The soak's own checker, in the default run: a doubled claim and completion are caught."""
    (tmp_path / "1.rec").write_text("C a 0\nD a\nO claim\n")
    (tmp_path / "2.rec").write_text("C a 0\nD a\nT complete unknown\n")
    seen = check_records(read_records(tmp_path))
    assert Counter(v.split()[0] for v in seen.violations) == {"a": 2}
    assert seen.operations == {"claim": 1} and seen.transient == 1
