"""SIGTERM and SIGINT: the first shuts the worker down gracefully, a second stops it at once."""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from types import FrameType

from asynctaskmanager.worker.logs import logger


def install_signal_handlers(
    worker_id: str, stop: Callable[..., None], stopping: Callable[[], bool]
) -> Callable[[], None] | None:
    """Route both signals to ``stop`` (``now=True`` once ``stopping()``); returns what puts
    the previous handlers back, or None off the main thread, where Python allows none."""
    if threading.current_thread() is not threading.main_thread():
        return None

    def on_signal(signum: int, frame: FrameType | None) -> None:
        now = stopping()
        logger.warning(
            "worker %s: %s, %s",
            worker_id,
            signal.Signals(signum).name,
            "stopping at once" if now else "shutting down (a second signal stops at once)",
        )
        stop(now=now)

    previous = {
        signum: signal.signal(signum, on_signal) for signum in (signal.SIGTERM, signal.SIGINT)
    }

    def restore() -> None:
        for signum, handler in previous.items():
            signal.signal(signum, handler)

    return restore
