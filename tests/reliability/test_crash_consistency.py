"""Crash consistency: worker processes SIGKILLed at random points of claim and complete.

Many short-lived worker processes claim and complete tasks. Each dies by SIGKILL: some kill
themselves at a random statement point (before or after a statement, before or after a
COMMIT), the others are killed by this process at a random moment. Meanwhile and afterwards
the queue's sweep takes back what the dead held. In the end every task is pending (and
claimable) or completed exactly once: zero lost, zero doubled, and every worker's
current_load equals its running tasks.

``ASYNCTASK_CRASH_KILLS`` sets the kills per backend: 100 by default, so 200 in a run over
the SQLite file and MySQL; raise it for a longer run.
"""

from __future__ import annotations

import multiprocessing
import os
import random
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from asynctaskmanager import (
    ExecutorType,
    RetryStrategy,
    Storage,
    TaskConfig,
    TaskRequest,
    TaskStatus,
    Worker,
)
from asynctaskmanager.infrastructure.schema import task_log_table, task_table
from tests.support.faults import (
    SHORT_SETTINGS,
    check_records,
    consistency_violations,
    crash_worker,
    open_backend,
    read_records,
    report,
    status_counts,
)

pytestmark = pytest.mark.concurrency

KILLS = int(os.environ.get("ASYNCTASK_CRASH_KILLS", "100"))
PARALLEL = 4
TIME_LIMIT = 120.0  # a safety net; the default run takes a fraction of it
TASK_TYPE = "crash"


def _context() -> Any:
    """A forkserver: children forked from a clean process that holds no connection."""
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["asynctaskmanager", "sqlalchemy", "tests.support.faults"])
    return context


@dataclass
class Child:
    process: Any
    ready: Any
    deadline: float | None = None


@dataclass
class Figures:
    kills: int = 0
    external_kills: int = 0
    other_exits: list[int | None] = field(default_factory=list)
    tasks: int = 0
    sweeps: int = 0


def _enqueue(storage: Storage, count: int) -> None:
    storage.queue.enqueue_many(
        TaskRequest(TASK_TYPE, {"n": n}, timeout=1, max_retry=1_000_000) for n in range(count)
    )


def _run_kills(url: str, storage: Storage, records: Path, figures: Figures) -> None:
    context = _context()
    rng = random.Random(int.from_bytes(os.urandom(4), "big"))
    children: list[Child] = []
    started = time.monotonic()
    next_sweep = started + 0.5
    spawned = 0
    while figures.kills < KILLS:
        assert time.monotonic() - started < TIME_LIMIT, f"only {figures.kills} kills in time"
        while len(children) < PARALLEL and spawned < KILLS + PARALLEL * 4:
            spawned += 1
            ready = context.Event()
            # Most kill themselves at a statement point; the rest wait for our SIGKILL.
            kill_at = rng.randint(1, 30) if rng.random() < 0.6 else 0
            process = context.Process(
                target=crash_worker,
                args=(
                    url,
                    f"crash-{spawned}",
                    rng.getrandbits(32),
                    str(records / f"{spawned}.rec"),
                    ready,
                    kill_at,
                ),
                daemon=True,
            )
            process.start()
            children.append(Child(process, ready))
        time.sleep(0.005)
        now = time.monotonic()
        for child in list(children):
            if child.process.exitcode is not None:
                child.process.join()
                children.remove(child)
                if child.process.exitcode == -signal.SIGKILL:
                    figures.kills += 1
                else:
                    figures.other_exits.append(child.process.exitcode)
                continue
            if child.deadline is None and child.ready.is_set():
                child.deadline = now + rng.uniform(0.0, 0.25)
            if child.deadline is not None and now >= child.deadline:
                # Process.kill(), not os.kill(): the forkserver reaps a child that killed
                # itself, so its pid can be gone before we see an exit code.
                child.process.kill()
                figures.external_kills += 1
                child.deadline = float("inf")
        if now >= next_sweep:
            storage.queue.sweep()
            figures.sweeps += 1
            next_sweep = now + 0.5
            pending = status_counts(storage)[TaskStatus.PENDING.value]
            if pending < 40:
                _enqueue(storage, 60)
                figures.tasks += 60
        if figures.other_exits:
            break
    for child in children:
        if child.process.exitcode is None:
            child.process.kill()
            figures.external_kills += 1
        child.process.join(10)
        if child.process.exitcode == -signal.SIGKILL:
            figures.kills += 1
        else:
            figures.other_exits.append(child.process.exitcode)


def _sweep_until_stable(storage: Storage) -> int:
    """Sweep until nothing runs and a sweep finds nothing to take back."""
    deadline = time.monotonic() + 30
    rounds = 0
    while True:
        time.sleep(1.1)  # past the one-second heartbeat and the one-second timeouts
        sweep = storage.queue.sweep()
        rounds += 1
        running = status_counts(storage)[TaskStatus.RUNNING.value]
        if running == 0 and not (sweep.requeued or sweep.failed):
            return rounds
        assert time.monotonic() < deadline, f"{running} tasks still running after sweeps"


@pytest.mark.parametrize(
    "backend",
    [
        "sqlite",
        pytest.param("mysql", marks=pytest.mark.mysql),
        pytest.param("postgres", marks=pytest.mark.postgres),
    ],
)
def test_sigkilled_workers_lose_nothing_and_double_nothing(
    request: pytest.FixtureRequest, tmp_path: Path, backend: str
) -> None:
    storage, database = open_backend(request, backend, SHORT_SETTINGS)
    url = database.render_as_string(hide_password=False)
    records = tmp_path / "records"
    records.mkdir()
    figures = Figures()
    started = time.monotonic()
    try:
        storage.task_configs.create(
            TaskConfig(
                TASK_TYPE,
                "crash test",
                ExecutorType.FUNCTION,
                RetryStrategy.FIXED,
                retry_delay=0,
                max_concurrent=10_000,
            )
        )
        _enqueue(storage, 120)
        figures.tasks = 120
        _run_kills(url, storage, records, figures)
        assert figures.other_exits == [], (
            f"workers that did not die by SIGKILL: {figures.other_exits}; "
            f"{check_records(read_records(records)).violations[:5]}"
        )
        rounds = _sweep_until_stable(storage)

        seen = check_records(read_records(records))
        violations = list(seen.violations)
        violations += consistency_violations(storage)
        statuses = status_counts(storage)
        assert sum(statuses.values()) == figures.tasks, "tasks lost or invented"
        violations += [
            f"{count} tasks {status}"
            for status, count in statuses.items()
            if status not in (TaskStatus.PENDING.value, TaskStatus.COMPLETED.value)
        ]
        completions: dict[str, int] = storage.run(
            lambda uow: dict(
                uow.connection.execute(
                    select(task_log_table.c.task_id, func.count())
                    .where(task_log_table.c.to_status == TaskStatus.COMPLETED.value)
                    .group_by(task_log_table.c.task_id)
                ).all()
            )
        )
        completed_ids = set(
            storage.run(
                lambda uow: uow.connection.execute(
                    select(task_table.c.task_id).where(
                        task_table.c.status == TaskStatus.COMPLETED.value
                    )
                ).scalars()
            )
        )
        violations += [
            f"{task_id}: {n} COMPLETED logs" for task_id, n in completions.items() if n != 1
        ]
        violations += [
            f"{task_id}: completed without its COMPLETED log"
            for task_id in completed_ids - set(completions)
        ]
        violations += [
            f"{task_id}: complete() said yes but the task is not completed"
            for task_id in seen.completed - completed_ids
        ]

        # Every pending task is claimable now: one fresh worker gets them all, once.
        pending = statuses[TaskStatus.PENDING.value]
        storage.queue.register_worker(Worker("final", "final", "127.0.0.1:0", capacity=10_000))
        claimed = storage.queue.claim("final", 1000) if pending else []
        while len(claimed) < pending:
            more = storage.queue.claim("final", 1000)
            if not more:
                break
            claimed += more
        if len(claimed) != pending:
            violations.append(f"{pending} pending but {len(claimed)} claimable")
        if len({task.task_id for task in claimed}) != len(claimed):
            violations.append("the final claim returned a task twice")
        for task in claimed:
            assert storage.queue.complete(task, {"by": "final"})
        assert status_counts(storage) == {TaskStatus.COMPLETED.value: figures.tasks}
        violations += consistency_violations(storage)

        where = ", ".join(f"{n} {point}" for point, n in seen.self_kills.most_common(6))
        report(
            request.config,
            f"crash {backend}: {figures.kills} SIGKILLs ({figures.external_kills} external, "
            f"{sum(seen.self_kills.values())} at statement points: {where}, ...), "
            f"{figures.tasks} tasks, {seen.claims} claims, {seen.completions} completions, "
            f"{seen.refused} refused, {pending} pending after {rounds} sweeps, "
            f"violations {len(violations)}, {time.monotonic() - started:.0f} s",
        )
        assert violations == []
        assert figures.kills >= KILLS
    finally:
        storage.close()
