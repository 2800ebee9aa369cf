"""Waking idle workers: LISTEN/NOTIFY where the server has it, polling with backoff elsewhere.

A worker whose claim came back empty waits for new work instead of claiming again at once::

    waiter = storage.queue.work_waiter()          # listening from here on
    while running:
        tasks = storage.queue.claim(worker_id)
        if not tasks:
            waiter.wait(timeout=5.0)              # True: work may have arrived

On PostgreSQL an enqueue notifies the channel in its own transaction, so the notification
arrives when, and only if, the enqueue commits. One background thread per storage holds the
listening connection and counts the notifications per task type; each waiter compares the
counts with those it saw last. A notification that arrives between two waits is not lost:
the next wait returns at once. When the listening connection is lost, every waiter is woken
(what was notified meanwhile is unknown) and the thread listens again.

Elsewhere a waiter polls: it reads how many tasks are due (pending, and due by the
database's clock), the newest creation time and the greatest id among them, at intervals
growing from ``POLL_FIRST_SECONDS`` to ``POLL_MAX_SECONDS``, and returns when any changed.
Due tasks no worker can take (a full type, say) do not wake it again and again.

Neither way notices a task that becomes due later (scheduled, or a retry's delay) by
itself: the wait's timeout bounds how late it is claimed.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Sequence
from typing import Any

from sqlalchemy import func, or_, select

from asynctaskmanager.domain.enums import TaskStatus
from asynctaskmanager.errors import ValidationError
from asynctaskmanager.infrastructure.dialects.profile import WorkChannel, WorkListener
from asynctaskmanager.infrastructure.expressions import database_clock
from asynctaskmanager.infrastructure.schema import task_table as t
from asynctaskmanager.infrastructure.transactions import TransactionRunner
from asynctaskmanager.infrastructure.unit_of_work import UnitOfWork

logger = logging.getLogger("asynctaskmanager.queue")

MAX_WAIT_SECONDS = 86_400
POLL_FIRST_SECONDS = 0.05
POLL_MAX_SECONDS = 1.0
# How long a new waiter waits for the listener's LISTEN before it polls instead.
LISTEN_READY_SECONDS = 5.0
_RELISTEN_PAUSE_SECONDS = 0.5
# The listener thread looks at its stop flag at least this often.
_LISTEN_SLICE_SECONDS = 1.0

_ANY_TYPE = "*"


class WorkWaiter:
    """Waits for new work; made by :meth:`TaskQueue.work_waiter`. One per worker thread."""

    def __init__(self, signal: _WorkSignal, task_types: Sequence[str] | None) -> None:
        self._signal = signal
        self._types = None if task_types is None else tuple(task_types)
        self._seen = signal.mark(self._types)

    def wait(self, timeout: float) -> bool:
        """Block until work may have arrived since the last call (or since this waiter was
        made): True; or ``timeout`` seconds passed: False. May return True for work that
        another worker took first; the caller claims and finds out."""
        if (
            isinstance(timeout, bool)
            or not isinstance(timeout, (int, float))
            or not 0 <= timeout <= MAX_WAIT_SECONDS
        ):
            raise ValidationError("timeout", f"must be 0 to {MAX_WAIT_SECONDS} seconds", timeout)
        woke, self._seen = self._signal.wait(self._types, self._seen, float(timeout))
        return woke


class _WorkSignal:
    """The shared part: the listener thread and its counts, or the poll."""

    def __init__(self, runner: TransactionRunner) -> None:
        self._runner = runner
        self._channel: WorkChannel | None = runner.profile.work_channel
        self._changed = threading.Condition()
        self._counts: Counter[str] = Counter()  # notifications per type; "*": reconnects
        self._listening = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    # --- the enqueue's side ---------------------------------------------------------------

    def notify(self, uow: UnitOfWork, task_types: Sequence[str]) -> None:
        if self._channel is not None:
            self._channel.notify(uow.connection, task_types)

    # --- the waiters' side ----------------------------------------------------------------

    def mark(self, task_types: tuple[str, ...] | None) -> Any:
        """What a waiter remembers: the counts now (listening), or the due work (polling)."""
        if self._channel is not None and self._listen():
            return self._count(task_types)
        return self._due_work(task_types)

    def wait(
        self, task_types: tuple[str, ...] | None, seen: Any, timeout: float
    ) -> tuple[bool, Any]:
        deadline = time.monotonic() + timeout
        if self._channel is not None and self._listen():
            if not isinstance(seen, int):  # marked while the listener was away
                return True, self._count(task_types)
            with self._changed:
                while True:
                    now = self._count(task_types)
                    if now != seen:
                        return True, now
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        return False, now
                    self._changed.wait(remaining)
        return self._poll(task_types, seen, deadline)

    def _count(self, task_types: tuple[str, ...] | None) -> int:
        with self._changed:
            if task_types is None:
                return sum(self._counts.values())
            return self._counts[_ANY_TYPE] + sum(self._counts[name] for name in task_types)

    def _poll(
        self, task_types: tuple[str, ...] | None, seen: Any, deadline: float
    ) -> tuple[bool, Any]:
        pause = POLL_FIRST_SECONDS
        while True:
            now = self._due_work(task_types)
            if now != seen:
                return True, now
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False, now
            time.sleep(min(pause, remaining))
            pause = min(pause * 2, POLL_MAX_SECONDS)

    def _due_work(self, task_types: tuple[str, ...] | None) -> tuple[Any, ...]:
        """How many tasks are due, the newest creation time and the greatest id among them
        (library ids grow with time): an enqueue changes at least one of them, even when a
        claim took one task away in the meantime."""
        query = select(func.count(), func.max(t.c.created_at), func.max(t.c.task_id)).where(
            t.c.status == TaskStatus.PENDING.value,
            or_(t.c.scheduled_at.is_(None), t.c.scheduled_at <= database_clock()),
        )
        if task_types is not None:
            query = query.where(t.c.task_type.in_(task_types))
        row = self._runner.run(lambda uow: uow.connection.execute(query).one(), read_only=True)
        return tuple(row)

    # --- the listener thread --------------------------------------------------------------

    def _listen(self) -> bool:
        """Start the listener thread if needed; whether it is listening (within a bound)."""
        with self._changed:
            if self._thread is None and not self._stopping.is_set():
                self._thread = threading.Thread(
                    target=self._run, name="asynctaskmanager-listener", daemon=True
                )
                self._thread.start()
        return self._listening.wait(LISTEN_READY_SECONDS)

    def _run(self) -> None:
        assert self._channel is not None
        while not self._stopping.is_set():
            listener: WorkListener | None = None
            try:
                listener = self._channel.listen(self._runner.engine)
                self._listening.set()
                while not self._stopping.is_set():
                    notified = listener.wait(_LISTEN_SLICE_SECONDS)
                    if notified:
                        with self._changed:
                            self._counts.update(notified)
                            self._changed.notify_all()
            except Exception as error:  # the connection is lost: listen again
                logger.warning("work listener lost its connection, listening again: %s", error)
            finally:
                self._listening.clear()
                if listener is not None:
                    _close_quietly(listener)
            with self._changed:
                # What was notified while nobody listened is unknown: wake every waiter.
                self._counts[_ANY_TYPE] += 1
                self._changed.notify_all()
            self._stopping.wait(_RELISTEN_PAUSE_SECONDS)

    def close(self) -> None:
        self._stopping.set()
        thread = self._thread
        if thread is not None:
            thread.join(_LISTEN_SLICE_SECONDS * 2 + 1)


def _close_quietly(listener: WorkListener) -> None:
    try:
        listener.close()
    except Exception as error:  # already broken; nothing to release
        logger.debug("closing the work listener: %s", error)
