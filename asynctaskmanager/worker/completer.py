"""The completer: finished attempts reach the store in small batches, on their own thread.

Handlers hand their outcome over and go back to work at once; the completer writes what has
gathered every ``flush_interval`` seconds, or as soon as ``batch_size`` outcomes wait,
so no result waits longer than about one interval. Each batch goes through one place,
:meth:`Completer._write`: one ``complete_many`` and one ``fail_many`` transaction per flush.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from asynctaskmanager import Task
from asynctaskmanager.errors import TransientStorageError
from asynctaskmanager.worker.logs import task_logger

if TYPE_CHECKING:
    from asynctaskmanager.storage import Storage

# Outcomes whose write failed with a transient error are tried again this many times, on
# the next flushes; a guarded completion applies at most once, so a retry is always safe.
WRITE_ATTEMPTS = 3


@dataclass(frozen=True)
class Outcome:
    """How one attempt ended: ``error`` None for a success with ``result``."""

    task: Task
    result: Any = None
    error: str | None = None
    attempts: int = 0


class Completer:
    """``submit`` outcomes from any thread; ``close`` writes what is left and stops.

    ``on_written(outcome, applied)`` is called for each outcome once it is written:
    ``applied`` is False when the store refused it because the task was taken back.
    """

    def __init__(
        self,
        storage: Storage,
        on_written: Callable[[Outcome, bool | None], None],
        *,
        flush_interval: float = 0.005,
        batch_size: int = 50,
    ) -> None:
        self._storage = storage
        self._on_written = on_written
        self._flush_interval = flush_interval
        self._batch_size = batch_size
        self._waiting: list[Outcome] = []
        self._unwritten = 0  # submitted, not yet written (waiting or being written)
        self._condition = threading.Condition()
        self._closing = False
        self._thread = threading.Thread(
            target=self._loop, name="asynctaskmanager-completer", daemon=True
        )

    def start(self) -> None:
        self._thread.start()

    def submit(self, outcome: Outcome) -> None:
        with self._condition:
            self._waiting.append(outcome)
            self._unwritten += 1
            if len(self._waiting) == 1 or len(self._waiting) >= self._batch_size:
                self._condition.notify()

    def pending(self) -> int:
        """Outcomes submitted and not yet written."""
        with self._condition:
            return self._unwritten

    def close(self, *, write: bool = True) -> None:
        """Stop; with ``write`` (the default) what is still waiting is written first."""
        with self._condition:
            self._closing = True
            if not write:
                self._unwritten -= len(self._waiting)
                self._waiting.clear()
            self._condition.notify()
        self._thread.join()

    def _loop(self) -> None:
        while True:
            with self._condition:
                self._condition.wait_for(lambda: self._waiting or self._closing)
                if not self._waiting and self._closing:
                    return
            # Let a batch gather for one interval unless it is full already.
            deadline = time.monotonic() + self._flush_interval
            with self._condition:
                while len(self._waiting) < self._batch_size and not self._closing:
                    left = deadline - time.monotonic()
                    if left <= 0 or not self._condition.wait(left):
                        break
                batch, self._waiting = self._waiting, []
            retry = self._flush(batch)
            with self._condition:
                self._unwritten -= len(batch) - len(retry)
            if retry:
                with self._condition:
                    self._waiting[:0] = retry
                time.sleep(self._flush_interval)

    def _flush(self, batch: list[Outcome]) -> list[Outcome]:
        """Write ``batch``; returns the outcomes to try again."""
        successes = [outcome for outcome in batch if outcome.error is None]
        failures = [outcome for outcome in batch if outcome.error is not None]
        retry: list[Outcome] = []
        for outcome, applied in self._write(successes, failures):
            if isinstance(applied, TransientStorageError) and outcome.attempts + 1 < WRITE_ATTEMPTS:
                retry.append(_retried(outcome))
                continue
            if isinstance(applied, Exception):
                task_logger(outcome.task).error(
                    "could not record the outcome (the sweep will take the task back): %s",
                    applied,
                )
                self._on_written(outcome, None)
                continue
            self._on_written(outcome, applied)
        return retry

    def _write(
        self, successes: list[Outcome], failures: list[Outcome]
    ) -> list[tuple[Outcome, bool | Exception]]:
        """One transaction for the successes (``complete_many``), one for the failures
        (``fail_many``)."""
        queue = self._storage.queue
        return _in_batch(
            successes, queue.complete_many, queue.complete, lambda o: o.result
        ) + _in_batch(failures, queue.fail_many, queue.fail, lambda o: o.error or "")


def _in_batch(
    outcomes: list[Outcome],
    write_many: Callable[[list[tuple[Task, Any]]], list[bool]],
    write_one: Callable[[Task, Any], bool],
    value: Callable[[Outcome], Any],
) -> list[tuple[Outcome, bool | Exception]]:
    """Each outcome's answer from one batched write. A transient failure is the whole
    batch's (it is retried); any other refusal is written again one by one, so that one bad
    outcome cannot stop the others."""
    if not outcomes:
        return []
    try:
        applied = write_many([(outcome.task, value(outcome)) for outcome in outcomes])
    except TransientStorageError as error:
        return [(outcome, error) for outcome in outcomes]
    except Exception:
        return [(o, _guarded(write_one, o.task, value(o))) for o in outcomes]
    return list(zip(outcomes, applied, strict=True))


def _guarded(write: Callable[[Task, Any], bool], task: Task, value: Any) -> bool | Exception:
    """The write's answer, or its error."""
    try:
        return write(task, value)
    except Exception as error:
        return error


def _retried(outcome: Outcome) -> Outcome:
    return Outcome(outcome.task, outcome.result, outcome.error, outcome.attempts + 1)
