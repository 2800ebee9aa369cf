"""The task queue's public API: argument checks, then one transaction per operation.

Every operation runs through the :class:`TransactionRunner`, so deadlocks and lock-wait
timeouts are rerun with jitter. Time is always the database's clock: a worker whose own
clock is off can neither claim early nor rescue a live task. The SQL lives beside this
module: the claim in ``claim.py``, the ends of attempts in ``attempts.py``, retention in
``retention.py``; the pure rules in :mod:`asynctaskmanager.domain.attempts`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from datetime import timedelta
from functools import partial
from typing import Any, TypeVar

from sqlalchemy import bindparam, select

from asynctaskmanager.domain import validation as check
from asynctaskmanager.domain.attempts import new_log, new_task
from asynctaskmanager.domain.enums import FINAL_STATUSES, LogType, TaskStatus, WorkerStatus
from asynctaskmanager.domain.models import Task, Worker
from asynctaskmanager.domain.requests import TaskRequest
from asynctaskmanager.errors import (
    StorageError,
    TransientStorageError,
    ValidationError,
)
from asynctaskmanager.infrastructure.expressions import db_now
from asynctaskmanager.infrastructure.schema import task_config_table as cfg
from asynctaskmanager.infrastructure.transactions import TransactionRunner
from asynctaskmanager.infrastructure.unit_of_work import UnitOfWork
from asynctaskmanager.queue.arguments import held_attempt, held_attempts
from asynctaskmanager.queue.attempts import (
    WorkerAlive,
    cancel_task,
    complete_attempt,
    complete_attempts,
    fail_attempt,
    fail_attempts,
    requeue_task,
    rescue_attempt,
)
from asynctaskmanager.queue.claim import CLAIM_MAX, OverLimit, claim_tasks, count_runnable
from asynctaskmanager.queue.retention import PruneReport, prune_finished
from asynctaskmanager.queue.settings import (
    CompletionAndClaim,
    CompletionsAndClaim,
    QueueSettings,
    SweepReport,
)
from asynctaskmanager.queue.wakeup import WorkWaiter, _WorkSignal
from asynctaskmanager.queue.workers import (
    beat,
    find_overdue,
    held_by,
    mark_dead,
    register,
    set_worker_status,
)

T = TypeVar("T")
C = TypeVar("C")
logger = logging.getLogger("asynctaskmanager.queue")

# What an enqueue needs of its types' configs: whether they are enabled, and the defaults.
_TYPE_DEFAULTS = select(
    cfg.c.task_type, cfg.c.enabled, cfg.c.default_timeout, cfg.c.default_max_retry, db_now()
)
_DEFAULTS_OF_TYPES = _TYPE_DEFAULTS.where(cfg.c.task_type.in_(bindparam("p_types", expanding=True)))
_DEFAULTS_OF_TYPE = _TYPE_DEFAULTS.where(cfg.c.task_type == bindparam("p_type"))


class TaskQueue:
    def __init__(self, runner: TransactionRunner, settings: QueueSettings) -> None:
        self._runner = runner
        self.settings = settings
        self._signal = _WorkSignal(runner)

    # --- waiting for work ------------------------------------------------------------------

    def work_waiter(self, task_types: Sequence[str] | None = None) -> WorkWaiter:
        """A waiter for new work (of ``task_types``; None: any), for a worker whose claim
        came back empty: LISTEN/NOTIFY on PostgreSQL, polling with backoff elsewhere (see
        :mod:`asynctaskmanager.queue.wakeup`). Make it before the first claim: from then on
        no enqueue is missed."""
        types = check.string_list("task_types", task_types, check.identifier)
        return WorkWaiter(self._signal, types)

    def close(self) -> None:
        """Stop listening (PostgreSQL). :meth:`Storage.close` calls it."""
        self._signal.close()

    # --- enqueue ---------------------------------------------------------------------------

    def enqueue(self, task_type: str, payload: Any = None, **options: Any) -> Task:
        """Enqueue one task; see :class:`TaskRequest` for the options."""
        # The request is made here, so its payload check is fresh: new_task need not repeat it.
        return self._enqueue([TaskRequest(task_type, payload, **options)], payload_checked=True)[0]

    def enqueue_many(self, requests: Iterable[TaskRequest]) -> list[Task]:
        """Enqueue many tasks in one transaction: all of them, or none.

        Unconfigured types raise :class:`UnknownTaskTypeError` and disabled types
        :class:`TaskTypeDisabledError`: a task no worker could ever claim is refused up front.
        """
        if isinstance(requests, (str, bytes)) or not isinstance(requests, Iterable):
            raise ValidationError("requests", "must be an iterable of TaskRequest", requests)
        batch = list(requests)
        for index, request in enumerate(batch):
            if not isinstance(request, TaskRequest):
                raise ValidationError(f"requests[{index}]", "must be a TaskRequest", request)
        return self._enqueue(batch, payload_checked=False) if batch else []

    def _enqueue(self, batch: list[TaskRequest], *, payload_checked: bool) -> list[Task]:
        def work(uow: UnitOfWork) -> list[Task]:
            types = sorted({request.task_type for request in batch})
            if len(types) == 1:
                rows = uow.connection.execute(_DEFAULTS_OF_TYPE, {"p_type": types[0]}).all()
            else:
                rows = uow.connection.execute(_DEFAULTS_OF_TYPES, {"p_types": types}).all()
            defaults = {row.task_type: row for row in rows}
            now = rows[0][-1] if rows else uow.connection.execute(select(db_now())).scalar_one()
            tasks = [
                new_task(
                    request, defaults.get(request.task_type), now, payload_checked=payload_checked
                )
                for request in batch
            ]
            # No SAVEPOINT: any failure here ends the transaction.
            uow.tasks.create_many(tasks, savepoint=False)
            uow.task_logs.create_many(
                (
                    new_log(task.task_id, LogType.CREATED, None, TaskStatus.PENDING, created_at=now)
                    for task in tasks
                ),
                savepoint=False,
            )
            self._signal.notify(uow, types)  # delivered if, and when, this commits
            return tasks

        return self._run(work)

    # --- claim -----------------------------------------------------------------------------

    def claim(self, worker_id: str, limit: int = 1) -> list[Task]:
        """Atomically claim up to ``limit`` runnable tasks for ``worker_id``.

        Runnable: pending, due by the database's clock, of a type the worker supports whose
        config is enabled. Highest priority first, then first in, first out. Never more than
        the worker's free capacity, nor more running tasks of a type than its max_concurrent.
        """
        check.identifier("worker_id", worker_id)
        check.integer("limit", limit, 1, CLAIM_MAX)
        claim = partial(self._claim, worker_id=worker_id, limit=limit)
        if self._runner.skip_locked():
            try:
                return self._run(claim)
            except OverLimit:
                pass  # rolled back; a type is at its max_concurrent: count under its lock
        return self._run(partial(claim, lock_limits_first=True))

    def count_runnable(self, task_types: Sequence[str]) -> int:
        """How many pending tasks of ``task_types`` are due by the database's clock, of an
        enabled type: what claims would take if no ``max_concurrent`` or capacity stood in
        the way. An empty claim with a positive count means "blocked by a limit", not
        "nothing to do"."""
        if isinstance(task_types, (str, bytes)) or not isinstance(task_types, Sequence):
            raise ValidationError("task_types", "must be a sequence of task types", task_types)
        types = [check.identifier("task_types", task_type) for task_type in task_types]
        if not types:
            return 0
        # Tasks enqueued through another node count (a worker's burst mode stops on 0).
        return self._run(partial(count_runnable, task_types=types), read_only=True, sync_wait=True)

    def complete_and_claim(
        self, task: Task, result: Any = None, limit: int = 1
    ) -> CompletionAndClaim:
        """:meth:`complete` ``task``, then :meth:`claim` up to ``limit`` tasks for its worker,
        in one transaction: a worker that takes one task at a time commits once per task
        instead of twice.

        The claim runs even when the completion does not apply (the task was taken back):
        the worker is free either way. Where the claim would exceed a max_concurrent (or a
        MySQL server has no SKIP LOCKED), the completion is committed on its own first, so
        that no claim can cost it, and the claim follows as :meth:`claim` would run it.
        After an exception the completion may or may not have applied; :meth:`complete`
        the task again (it applies at most once).
        """
        held_attempt(task, TaskStatus.COMPLETED)
        check.json_document("result", result)
        check.integer("limit", limit, 1, CLAIM_MAX)
        assert task.worker_id is not None  # _check_lease
        complete = partial(complete_attempt, task=task, result=result)
        return CompletionAndClaim(*self._complete_then_claim(complete, task.worker_id, limit))

    def _complete_then_claim(
        self, complete: Callable[[UnitOfWork], C], worker_id: str, limit: int
    ) -> tuple[C, list[Task]]:
        """``complete``, then a claim for ``worker_id``, in one transaction where that cannot
        cost the completion (see :meth:`complete_and_claim`)."""
        claim = partial(self._claim, worker_id=worker_id, limit=limit)

        def both(uow: UnitOfWork, lock_limits_first: bool = False) -> tuple[C, list[Task]]:
            return complete(uow), claim(uow, lock_limits_first=lock_limits_first)

        if self._runner.skip_locked():
            try:
                return self._run(both)
            except OverLimit:
                pass  # both halves rolled back
        elif self._runner.profile.single_writer:
            # SQLite: the write lock serialises everything, limits are counted under it.
            return self._run(partial(both, lock_limits_first=True))
        completed = self._run(complete)
        return completed, self._run(partial(claim, lock_limits_first=True))

    def _claim(
        self, uow: UnitOfWork, worker_id: str, limit: int, lock_limits_first: bool = False
    ) -> list[Task]:
        return claim_tasks(
            uow,
            worker_id,
            limit,
            skip_locked=self._runner.skip_locked(),
            lock_limits_first=lock_limits_first,
        )

    # --- guarded transitions ---------------------------------------------------------------

    def complete_many(self, items: Iterable[tuple[Task, Any]]) -> list[bool]:
        """:meth:`complete` many claimed tasks, given as ``(task, result)`` pairs, in one
        transaction; returns, per pair, whether it applied. A worker that finishes tasks
        faster than it can commit them one by one batches them here."""
        batch = held_attempts(items, TaskStatus.COMPLETED)
        for index, (_, result) in enumerate(batch):
            check.json_document(f"items[{index}].result", result)
        if not batch:
            return []
        return self._run(partial(complete_attempts, items=batch))

    def complete_many_and_claim(
        self, items: Iterable[tuple[Task, Any]], limit: int = 1
    ) -> CompletionsAndClaim:
        """:meth:`complete_many`, then :meth:`claim` up to ``limit`` tasks for the worker
        that holds them all, in one transaction, by the rules of :meth:`complete_and_claim`."""
        batch = held_attempts(items, TaskStatus.COMPLETED)
        for index, (_, result) in enumerate(batch):
            check.json_document(f"items[{index}].result", result)
        check.integer("limit", limit, 1, CLAIM_MAX)
        workers = {task.worker_id for task, _ in batch}
        if len(workers) != 1:
            raise ValidationError("items", "must be tasks held by one worker, at least one", items)
        [worker_id] = workers
        assert worker_id is not None  # _lease_batch
        complete = partial(complete_attempts, items=batch)
        return CompletionsAndClaim(*self._complete_then_claim(complete, worker_id, limit))

    def fail_many(self, items: Iterable[tuple[Task, str]], *, retry: bool = True) -> list[bool]:
        """:meth:`fail` many claimed tasks, given as ``(task, error_message)`` pairs, in one
        transaction; returns, per pair, whether it applied."""
        batch = held_attempts(items, TaskStatus.FAILED)
        for index, (_, message) in enumerate(batch):
            check.long_text(f"items[{index}].error_message", message)
        check.boolean("retry", retry)

        if not batch:
            return []
        return self._run(partial(fail_attempts, items=batch, retry=retry, settings=self.settings))

    def complete(self, task: Task, result: Any = None) -> bool:
        """Mark the claimed ``task`` completed with ``result``.

        Applies only while this worker still holds this attempt; returns whether it did.
        """
        held_attempt(task, TaskStatus.COMPLETED)
        check.json_document("result", result)
        return self._run(partial(complete_attempt, task=task, result=result))

    def fail(self, task: Task, error_message: str, *, retry: bool = True) -> bool:
        """Record a failed attempt: retried later if retries are left (and ``retry``), else
        failed for good. Applies only while this worker still holds this attempt.

        A back-off that would land after 2038-01-19 03:14:07 UTC, the last instant a
        TIMESTAMP holds, fails the task for good instead."""
        held_attempt(task, TaskStatus.FAILED)
        check.long_text("error_message", error_message)
        check.boolean("retry", retry)
        return self._run(
            partial(
                fail_attempt, task=task, message=error_message, retry=retry, settings=self.settings
            )
        )

    def cancel(self, task_id: str, reason: str | None = None) -> bool:
        """Cancel a pending or running task. A final task raises IllegalTransitionError.

        Returns False when the task changed under us and is no longer cancellable.
        """
        check.identifier("task_id", task_id)
        check.long_text("reason", reason)
        return self._run(partial(cancel_task, task_id=task_id, reason=reason))

    def requeue(self, task_id: str, reason: str | None = None) -> Task:
        """An operator's retry: put a failed or cancelled task back to pending, due now, with
        ``retry_count`` reset, and log it (``retry_scheduled``, ``details.by="operator"``).

        Any other status raises :class:`IllegalTransitionError`; returns the task as it is now.
        """
        check.identifier("task_id", task_id)
        check.long_text("reason", reason)
        return self._run(partial(requeue_task, task_id=task_id, reason=reason))

    # --- workers ---------------------------------------------------------------------------

    def register_worker(self, worker: Worker) -> Worker:
        """Register (or re-register) a worker as online with a fresh heartbeat.

        A worker that registers again under the same id is a new incarnation: whatever the
        old one still held is taken back first, as from a dead worker.
        """
        if not isinstance(worker, Worker):
            raise ValidationError("worker", "must be a Worker", worker)
        self._rescue_held_by(worker.worker_id, "worker re-registered")

        return self._run(partial(register, worker=worker))

    def heartbeat(self, worker_id: str) -> set[str]:
        """Record that the worker is alive; returns the ids of the tasks it still holds.

        A task missing from the answer was taken back: the worker should stop working on it
        (its completion would be refused anyway).
        """
        check.identifier("worker_id", worker_id)

        # The held set must include claims the worker made through another node.
        return self._run(partial(beat, worker_id=worker_id), sync_wait=True)

    def deregister_worker(self, worker_id: str) -> None:
        """Take the worker offline; whatever it still holds is requeued (or failed)."""
        check.identifier("worker_id", worker_id)
        self._run(lambda uow: set_worker_status(uow, worker_id, WorkerStatus.OFFLINE))
        self._rescue_held_by(worker_id, "worker deregistered")

    # --- sweep -----------------------------------------------------------------------------

    def sweep(self) -> SweepReport:
        """Take back the tasks of dead workers and the tasks running past their timeout.

        A worker is dead when its last heartbeat is older than ``dead_after`` by the
        database's clock. Its tasks are taken back only if it is still silent when each one
        is taken: a worker whose heartbeat arrives meanwhile keeps them. Safe to run from
        several processes at once: each task is taken back by a guarded update, in its own
        transaction, so at most one sweeper wins it. A task that cannot be taken back (the
        database refuses it) is logged and left for the next sweep; it never stops this one.
        """
        dead_after = self.settings.dead_after
        # Heartbeats and completions made through other nodes must be seen, or a live
        # worker's tasks are read as lost (the guarded take-back would refuse them anyway).
        dead, overdue = self._run(
            partial(find_overdue, settings=self.settings), read_only=True, sync_wait=True
        )
        offline = [
            worker_id
            for worker_id in dead
            if self._run(partial(mark_dead, worker_id=worker_id, dead_after=dead_after))
        ]
        requeued: list[str] = []
        failed: list[str] = []
        for task, lost, timed_out in overdue:
            outcome: TaskStatus | None = None
            alive = False
            if lost:
                try:
                    outcome = self._rescue(task, "worker lost", silent_for=dead_after)
                except WorkerAlive:
                    alive = True
            if timed_out and (alive or not lost):
                outcome = self._rescue(task, f"timed out after {task.timeout}s")
            if outcome is TaskStatus.PENDING:
                requeued.append(task.task_id)
            elif outcome is TaskStatus.FAILED:
                failed.append(task.task_id)
        return SweepReport(offline, requeued, failed)

    # --- retention -------------------------------------------------------------------------

    def prune(
        self,
        older_than: timedelta,
        *,
        statuses: Iterable[TaskStatus] = FINAL_STATUSES,
        batch_size: int = 1000,
        on_batch: Callable[[int], None] | None = None,
    ) -> PruneReport:
        """Delete the finished tasks (and their log rows) that ended ``older_than`` ago,
        and the workers offline and silent for that long (and at least ``dead_after``) that
        hold nothing.

        By the database's clock; in batches of ``batch_size``, each its own transaction.
        ``statuses`` narrows which final statuses go (e.g. keep failed tasks longer).
        ``on_batch`` is called after each batch with the tasks it deleted (for progress).
        """
        return prune_finished(
            self._runner,
            older_than,
            statuses=statuses,
            batch_size=batch_size,
            worker_grace=self.settings.dead_after,
            on_batch=on_batch,
        )

    # --- helpers ---------------------------------------------------------------------------

    def _run(
        self, work: Callable[[UnitOfWork], T], *, read_only: bool = False, sync_wait: bool = False
    ) -> T:
        return self._runner.run(work, read_only=read_only, sync_wait=sync_wait)

    def _rescue_held_by(self, worker_id: str, reason: str) -> None:
        held = self._run(partial(held_by, worker_id=worker_id), read_only=True, sync_wait=True)
        for task in held:
            self._rescue(task, reason)

    def _rescue(
        self, task: Task, reason: str, silent_for: timedelta | None = None
    ) -> TaskStatus | None:
        """One task taken back in its own transaction; a refusal by the database other than
        a transient one is logged, and the task is left for a later sweep."""
        rescue = partial(
            rescue_attempt, task=task, reason=reason, settings=self.settings, silent_for=silent_for
        )
        try:
            return self._run(rescue)
        except StorageError as error:
            if isinstance(error, TransientStorageError):
                raise
            logger.error("could not take back task %s (%s): %s", task.task_id, reason, error)
            return None
