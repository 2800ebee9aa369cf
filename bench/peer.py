"""The peer: kombu's SQLAlchemy transport (Celery's database broker), used as Celery uses it.

publish: ``SimpleQueue.put`` (one INSERT and commit per message). get+ack:
``SimpleQueue.get(block=False)`` then ``message.ack()``: one transaction that selects the
oldest visible message FOR UPDATE and flags it invisible; the ack itself is in memory.
kombu writes no audit row and has no retries, priorities, schedules or worker accounting.
On SQLite it gets the same 30 s busy timeout as ours and the raw driver.
"""

from __future__ import annotations

import os
from typing import Any

from sqlalchemy import create_engine, make_url, text

from bench.common import Locator, payload

QUEUE = "bench"


def kombu_url(locator: Locator) -> str:
    if locator.backend == "sqlite":
        return f"sqlalchemy+sqlite:///{locator.path}"
    assert locator.url is not None
    return "sqlalchemy+" + locator.url


def empty_kombu(locator: Locator) -> None:
    """Untimed: drop every message (kombu never deletes delivered ones)."""
    if locator.backend == "sqlite":
        assert locator.path is not None
        if os.path.exists(locator.path):
            engine = create_engine(f"sqlite:///{locator.path}")
            with engine.begin() as connection:
                connection.execute(text("DELETE FROM kombu_message"))
            engine.dispose()
        return
    assert locator.url is not None
    engine = create_engine(make_url(locator.url))
    try:
        with engine.begin() as connection:
            tables = {row[0] for row in connection.execute(text("SHOW TABLES"))}
            if "kombu_message" in tables:
                connection.execute(text("TRUNCATE TABLE kombu_message"))
    finally:
        engine.dispose()


class Kombu:
    name = "kombu"

    def __init__(self, locator: Locator) -> None:
        from kombu import Connection  # type: ignore[attr-defined]

        connection: Any = Connection
        # kombu hands transport options to create_engine. On SQLite: the same 30 s busy
        # timeout as ours and the raw driver (its default of 5 s fails 4 loaded processes).
        options = {"connect_args": {"timeout": 30}} if locator.backend == "sqlite" else {}
        self.connection: Any = connection(kombu_url(locator), transport_options=options)
        self.queue: Any = self.connection.SimpleQueue(QUEUE)
        self.Empty = self.queue.Empty

    def publish(self, i: int) -> None:
        self.queue.put(payload(i))

    def get_ack(self) -> bool:
        try:
            message: Any = self.queue.get(block=False)
        except self.Empty:
            return False
        message.ack()
        return True

    def close(self) -> None:
        self.queue.close()
        self.connection.release()
