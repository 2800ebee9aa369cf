"""The worker runtime: register, heartbeat, claim, run, complete or fail, sweep, stop.

Threads, each with one job:

- the caller's thread claims up to the free slots and hands tasks to the pool;
- the pool (threads, or processes with ``use_processes``) runs the handlers;
- the completer writes the outcomes in small batches (see :mod:`.completer`);
- the heartbeat thread keeps the worker alive and learns which tasks were taken back;
- the sweep thread runs the store's sweep, in one worker at a time (a lease row).

A slot is free only when its handler has returned: a task past its timeout is reported,
and the store's sweep may take it back, but its slot stays taken until the code really ends
(Python cannot stop a thread).
"""

from __future__ import annotations

import concurrent.futures
import os
import socket
import threading
import time
from collections.abc import Callable, Mapping
from datetime import timedelta
from functools import partial
from typing import Any

from asynctaskmanager import (
    AsyncTaskManagerError,
    NotFoundError,
    Storage,
    StorageError,
    Task,
    Worker,
)
from asynctaskmanager.domain import limits
from asynctaskmanager.domain import validation as check
from asynctaskmanager.worker.completer import Completer, Outcome
from asynctaskmanager.worker.handlers import (
    Handler,
    Result,
    call_handler,
    checked_handlers,
    describe_error,
    make_executor,
)
from asynctaskmanager.worker.logs import logger, task_logger
from asynctaskmanager.worker.records import Attempt, RunSummary
from asynctaskmanager.worker.signals import install_signal_handlers
from asynctaskmanager.worker.sweeping import SWEEP_LEASE, check_options, sweep_while_leased
from asynctaskmanager.worker.waiting import IdleBackoff, Wakeup


class WorkerRuntime:
    """One worker. :func:`run_worker` builds one and runs it; see it for the options."""

    def __init__(
        self,
        storage: Storage,
        handlers: Mapping[str, Handler],
        *,
        worker_id: str | None = None,
        name: str | None = None,
        concurrency: int = 4,
        burst: bool = False,
        poll_interval: float = 0.05,
        max_poll_interval: float = 2.0,
        shutdown_timeout: float = 30.0,
        heartbeat_interval: timedelta | None = None,
        sweep_interval: timedelta | None = timedelta(seconds=30),
        use_processes: bool = False,
        flush_interval: float = 0.005,
        batch_size: int = 50,
        wakeup: Wakeup | None = None,
    ) -> None:
        self._handlers = checked_handlers(handlers, use_processes)
        check_options(
            concurrency=concurrency,
            burst=burst,
            seconds={
                "poll_interval": poll_interval,
                "max_poll_interval": max_poll_interval,
                "shutdown_timeout": shutdown_timeout,
                "flush_interval": flush_interval,
            },
            intervals={"heartbeat_interval": heartbeat_interval, "sweep_interval": sweep_interval},
            batch_size=batch_size,
        )
        host = socket.gethostname() or "localhost"
        self.worker_id = worker_id or f"{host[:32]}-{os.getpid()}-{os.urandom(4).hex()}"
        check.identifier("worker_id", self.worker_id)
        self._name = name or f"worker {os.getpid()} on {host}"[: limits.NAME_MAX]
        self._address = f"{host}/{os.getpid()}"[: limits.ADDRESS_MAX]
        self._storage = storage
        self._concurrency = concurrency
        self._burst = burst
        self._poll_interval = poll_interval
        self._max_poll_interval = max_poll_interval
        self._shutdown_timeout = shutdown_timeout
        self._heartbeat_interval = heartbeat_interval or storage.queue.settings.heartbeat_interval
        self._sweep_interval = sweep_interval
        self._use_processes = use_processes
        self._wakeup = wakeup or Wakeup()
        self._leases = storage.leases
        self._completer = Completer(
            storage, self._written, flush_interval=flush_interval, batch_size=batch_size
        )
        self._lock = threading.Lock()
        self._slot_freed = threading.Condition(self._lock)
        self._running: dict[str, Attempt] = {}
        self._abandoned = False
        self._stopping = threading.Event()
        self._stop_now = threading.Event()
        self._background_stop = threading.Event()
        self._summary = RunSummary(self.worker_id)

    # --- control ---------------------------------------------------------------------------

    def stop(self, *, now: bool = False) -> None:
        """Stop claiming and shut down gracefully; with ``now``, stop at once (what it
        holds stays with it until a sweep rescues it). Safe from any thread or a signal."""
        if now:
            self._stop_now.set()
        self._stopping.set()
        self._wakeup.wake()
        with self._slot_freed:
            self._slot_freed.notify_all()

    def run(self, *, handle_signals: bool = True) -> RunSummary:
        """Run until stopped (or, in burst mode, until nothing runnable is left).

        With ``handle_signals`` (and on the main thread) SIGTERM and SIGINT stop it
        gracefully and a second one stops it at once; the previous handlers come back
        when it returns.
        """
        restore = self._install_signal_handlers() if handle_signals else None
        try:
            return self._run()
        finally:
            if restore is not None:
                restore()

    # --- the claim loop --------------------------------------------------------------------

    def _run(self) -> RunSummary:
        self._warn_about_configs()
        self._register()
        logger.info(
            "worker %s started: %d %s, types %s%s",
            self.worker_id,
            self._concurrency,
            "processes" if self._use_processes else "threads",
            ", ".join(sorted(self._handlers)),
            ", burst" if self._burst else "",
        )
        executor = self._executor()
        self._completer.start()
        background = [threading.Thread(target=self._heartbeats, name="asynctaskmanager-heartbeat")]
        if self._sweep_interval is not None:
            background.append(threading.Thread(target=self._sweeps, name="asynctaskmanager-sweep"))
        for thread in background:
            thread.daemon = True
            thread.start()
        try:
            self._claim_loop(executor)
            if not self._stop_now.is_set():
                self._drain()
        finally:
            self._shut_down(executor, background)
        return self._summary

    def _claim_loop(self, executor: concurrent.futures.Executor) -> None:
        backoff = IdleBackoff(self._poll_interval, self._max_poll_interval)
        while not self._stopping.is_set():
            self._report_overdue()
            free = self._concurrency - self._busy()
            if free <= 0:
                self._wakeup.wait_for_work(1.0)  # a finishing handler wakes it
                continue
            try:
                tasks = self._storage.queue.claim(self.worker_id, limit=free)
            except NotFoundError:
                logger.warning(
                    "worker %s was deleted from the store; registering again", self.worker_id
                )
                self._register_again()
                continue
            except StorageError as error:
                logger.warning("claim failed, trying again: %s", error)
                self._wakeup.wait_for_work(backoff.next())
                continue
            for task in tasks:
                self._start(executor, task)
            if tasks:
                backoff.reset()
                continue
            if self._completer.pending():
                # The store frees a slot when its outcome is written, not when its handler
                # returns: a claim cut short by that is no sign of an idle queue. The write
                # wakes this loop (see _written).
                self._wakeup.wait_for_work(self._max_poll_interval)
                continue
            if self._burst and self._nothing_left():
                logger.info("worker %s: no runnable task left (burst)", self.worker_id)
                return
            wait = backoff.next()
            self._wakeup.wait_for_work(min(wait, 1.0) if self._busy() else wait)

    def _start(self, executor: concurrent.futures.Executor, task: Task) -> None:
        attempt = Attempt(task, time.monotonic())
        with self._lock:
            self._running[task.task_id] = attempt
        task_logger(task).info("started, attempt %d", task.retry_count + 1)
        try:
            future = executor.submit(call_handler, self._handlers[task.task_type], task)
        except Exception as error:  # the pool is broken or shut down
            future = concurrent.futures.Future()
            future.set_exception(error)
        future.add_done_callback(partial(self._finished, attempt))

    def _finished(self, attempt: Attempt, future: concurrent.futures.Future[Result]) -> None:
        task = attempt.task
        log = task_logger(task)
        try:
            ok, value = future.result()
        except BaseException as error:  # a broken pool, a result that could not be pickled
            ok, value = False, describe_error(error)
        elapsed = time.monotonic() - attempt.started
        with self._lock:
            self._running.pop(task.task_id, None)
            self._slot_freed.notify_all()
            if self._abandoned or attempt.taken_back:
                self._summary.dropped += 1
                log.warning(
                    "ended %.3fs in, after %s: outcome dropped",
                    elapsed,
                    "it was handed back" if self._abandoned else "the store took it back",
                )
            else:
                if ok:
                    log.info("succeeded in %.3fs", elapsed)
                else:
                    log.warning("failed in %.3fs: %s", elapsed, value)
                # Under the lock, so that a shutdown cannot close the completer in between.
                self._completer.submit(
                    Outcome(task, result=value) if ok else Outcome(task, error=value)
                )
        self._wakeup.wake()

    def _written(self, outcome: Outcome, applied: bool | None) -> None:
        log = task_logger(outcome.task)
        self._wakeup.wake()  # its slot is free in the store now
        if applied is None:
            return  # logged by the completer
        with self._lock:
            if not applied:
                self._summary.dropped += 1
            elif outcome.error is None:
                self._summary.completed += 1
            else:
                self._summary.failed += 1
        if not applied:
            log.warning("the store refused the outcome: the task was taken back meanwhile")
        else:
            log.debug("outcome recorded")

    def _busy(self) -> int:
        with self._lock:
            return len(self._running)

    def _report_overdue(self) -> None:
        now = time.monotonic()
        with self._lock:
            overdue = [
                attempt
                for attempt in self._running.values()
                if not attempt.overdue_reported and now - attempt.started > attempt.task.timeout
            ]
            for attempt in overdue:
                attempt.overdue_reported = True
        for attempt in overdue:
            task_logger(attempt.task).warning(
                "running past its timeout of %ds; its slot stays taken until it ends",
                attempt.task.timeout,
            )

    def _nothing_left(self) -> bool:
        """Burst: true when this worker runs nothing, has no outcome left to write (a
        failure may requeue a task) and no pending, due task of its types waits. Pending
        tasks that a claim did not return are blocked by a limit (a type at its
        max_concurrent, or held by others): the worker waits for them."""
        if self._busy() or self._completer.pending():
            return False
        waiting = self._storage.queue.count_runnable(sorted(self._handlers))
        if waiting:
            logger.debug("worker %s: %d runnable task(s) wait for a slot", self.worker_id, waiting)
        return waiting == 0

    def _register(self) -> None:
        self._storage.queue.register_worker(
            Worker(
                self.worker_id,
                self._name,
                self._address,
                capacity=self._concurrency,
                supported_types=sorted(self._handlers),
            )
        )

    def _register_again(self) -> None:
        try:
            self._register()
        except StorageError as error:
            logger.warning("registering worker %s failed: %s", self.worker_id, error)
            self._wakeup.wait_for_work(self._max_poll_interval)

    # --- shutdown --------------------------------------------------------------------------

    def _drain(self) -> None:
        """Give the running handlers until the deadline; then hand back what still runs."""
        deadline = time.monotonic() + self._shutdown_timeout
        with self._slot_freed:
            if self._running:
                logger.info(
                    "worker %s stopping: waiting up to %.1fs for %d task(s)",
                    self.worker_id,
                    self._shutdown_timeout,
                    len(self._running),
                )
            while self._running and not self._stop_now.is_set():
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._slot_freed.wait(left)
            if self._stop_now.is_set():
                return
            self._abandoned = True
            self._summary.handed_back = sorted(self._running)
        for task_id in self._summary.handed_back:
            task_logger(self._running_task(task_id)).warning(
                "still running at the shutdown deadline: handed back to the queue"
            )

    def _running_task(self, task_id: str) -> Task:
        with self._lock:
            attempt = self._running.get(task_id)
        return attempt.task if attempt is not None else Task("unknown", task_id=task_id)

    def _shut_down(
        self, executor: concurrent.futures.Executor, background: list[threading.Thread]
    ) -> None:
        at_once = self._stop_now.is_set()
        self._summary.stopped_at_once = at_once
        with self._lock:
            self._abandoned = True
        self._completer.close(write=not at_once)
        self._background_stop.set()
        for thread in background:
            thread.join()
        if not at_once:
            try:
                self._leases.release(SWEEP_LEASE, self.worker_id)
                self._storage.queue.deregister_worker(self.worker_id)
            except StorageError as error:
                logger.error(
                    "worker %s could not deregister (the sweep will rescue its tasks): %s",
                    self.worker_id,
                    error,
                )
        executor.shutdown(wait=False, cancel_futures=True)
        self._wakeup.close()
        logger.info(
            "worker %s stopped%s: %d completed, %d failed, %d dropped, %d handed back",
            self.worker_id,
            " at once" if at_once else "",
            self._summary.completed,
            self._summary.failed,
            self._summary.dropped,
            len(self._summary.handed_back),
        )

    # --- background ------------------------------------------------------------------------

    def _heartbeats(self) -> None:
        interval = self._heartbeat_interval.total_seconds()
        while not self._background_stop.wait(interval):
            with self._lock:
                asked = set(self._running)
            try:
                held = self._storage.queue.heartbeat(self.worker_id)
            except AsyncTaskManagerError as error:  # NotFoundError too: keep beating
                logger.warning("worker %s: heartbeat failed: %s", self.worker_id, error)
                continue
            with self._lock:
                # Only handlers still running: a finished one's task may be completed by now.
                lost = [
                    attempt
                    for task_id, attempt in self._running.items()
                    if task_id in asked and task_id not in held and not attempt.taken_back
                ]
                for attempt in lost:
                    attempt.taken_back = True
            for attempt in lost:
                task_logger(attempt.task).warning(
                    "taken back by the store (timed out, or its worker was thought lost); "
                    "its outcome will be dropped"
                )

    def _sweeps(self) -> None:
        assert self._sweep_interval is not None
        sweep_while_leased(
            self._storage, self.worker_id, self._sweep_interval, self._background_stop
        )

    # --- setup -----------------------------------------------------------------------------

    def _executor(self) -> concurrent.futures.Executor:
        return make_executor(self._concurrency, use_processes=self._use_processes)

    def _warn_about_configs(self) -> None:
        for task_type in sorted(self._handlers):
            config = self._storage.task_configs.find(task_type)
            if config is None:
                logger.warning("task type %s has a handler but no TaskConfig", task_type)
            elif not config.enabled:
                logger.warning("task type %s is disabled: none of its tasks will run", task_type)

    def _install_signal_handlers(self) -> Callable[[], None] | None:
        return install_signal_handlers(self.worker_id, self.stop, self._stopping.is_set)


def run_worker(
    storage: Storage,
    handlers: Mapping[str, Handler],
    *,
    handle_signals: bool = True,
    **options: Any,
) -> RunSummary:
    """Run a worker on ``storage`` until a signal stops it (or, with ``burst``, until no
    runnable task is left), and return what it did.

    ``handlers`` maps each task type this worker runs to a :data:`Handler`: a callable that
    gets the claimed :class:`Task` and returns its result (a JSON document, or None); an
    exception fails the attempt with ``"ExceptionType: message"`` and the type's retry
    strategy applies. ``concurrency`` tasks run at once, in threads or (``use_processes``)
    in spawned processes, whose handlers must then be importable module-level functions.

    Idle, it polls after ``poll_interval`` seconds, doubling up to ``max_poll_interval``
    (with jitter). It sends heartbeats every ``heartbeat_interval`` (default: the
    storage's ``QueueSettings``) and, every ``sweep_interval`` (None: never), runs the
    store's sweep if it holds the sweep lease, so that one worker of the fleet sweeps.
    On SIGTERM/SIGINT it stops claiming, gives its running tasks ``shutdown_timeout``
    seconds, hands back those still running and deregisters; a second signal stops it
    at once.

    ``options`` are :class:`WorkerRuntime`'s: ``worker_id``, ``name``, ``concurrency=4``,
    ``burst=False``, ``poll_interval=0.05``, ``max_poll_interval=2.0``,
    ``shutdown_timeout=30.0``, ``heartbeat_interval=None``, ``sweep_interval=30 s``,
    ``use_processes=False``, ``flush_interval=0.005``, ``batch_size=50``, ``wakeup=None``.
    """
    runtime = WorkerRuntime(storage, handlers, **options)
    return runtime.run(handle_signals=handle_signals)
