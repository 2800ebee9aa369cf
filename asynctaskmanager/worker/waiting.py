"""How an idle worker waits: exponential back-off with jitter, and a wake-up hook."""

from __future__ import annotations

import random
import threading


class IdleBackoff:
    """Waits that double from ``first`` up to ``cap`` seconds while claims come back empty,
    each shortened at random by up to half, so that idle workers do not poll in step."""

    def __init__(self, first: float, cap: float) -> None:
        self._first = first
        self._cap = max(cap, first)
        self._empty_claims = 0

    def reset(self) -> None:
        self._empty_claims = 0

    def next(self) -> float:
        ceiling = min(self._cap, self._first * 2 ** min(self._empty_claims, 32))
        self._empty_claims += 1
        return random.uniform(ceiling / 2, ceiling)


class Wakeup:
    """What the claim loop waits on between claims.

    :meth:`wait_for_work` returns after ``timeout`` seconds, or earlier once :meth:`wake` is
    called: the runtime wakes it when a slot frees up or a stop is asked for. A backend
    that can announce new work (PostgreSQL's LISTEN/NOTIFY) subclasses this and calls
    :meth:`wake` when a notification arrives, so idle workers start at once instead of at
    their next poll.
    """

    def __init__(self) -> None:
        self._event = threading.Event()

    def wait_for_work(self, timeout: float) -> None:
        self._event.wait(timeout)
        self._event.clear()

    def wake(self) -> None:
        self._event.set()

    def close(self) -> None:
        """Release what the waiting holds (a LISTEN connection); nothing here."""
