"""Whether the task table is partitioned by month, asked of the catalogue and remembered.

The queue asks this on paths that must stay cheap (prune; the claim, if it ever bounds its
scan), so the answer is kept per database for a while rather than read every time.
"""

from __future__ import annotations

import threading
import time

from sqlalchemy import Engine

from asynctaskmanager.partitions.mysql import MySQLPartitioning

# How long "is the task table partitioned?" is believed without asking again. A table
# partitioned or merged by another process is noticed within this time; until then prune
# only deletes (always correct) or finds no month to drop.
PARTITIONED_CACHE_SECONDS = 60.0
MYSQL_DIALECTS = ("mysql", "mariadb")


class _PartitionedCache:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._answers: dict[str, tuple[float, bool]] = {}

    @staticmethod
    def key(engine: Engine) -> str:
        return engine.url.render_as_string(hide_password=True)

    def get(self, engine: Engine) -> bool | None:
        with self._lock:
            cached = self._answers.get(self.key(engine))
        if cached is None or cached[0] < time.monotonic():
            return None
        return cached[1]

    def put(self, engine: Engine, partitioned: bool) -> None:
        expires = time.monotonic() + PARTITIONED_CACHE_SECONDS
        with self._lock:
            self._answers[self.key(engine)] = (expires, partitioned)

    def forget(self, engine: Engine) -> None:
        with self._lock:
            self._answers.pop(self.key(engine), None)


_partitioned = _PartitionedCache()


def is_partitioned(engine: Engine) -> bool:
    """Whether ``task`` is partitioned by month here: False at once off MySQL/MariaDB; else
    one catalogue read per database every PARTITIONED_CACHE_SECONDS.

    Raises the driver's DBAPIError; callers translate it."""
    if engine.dialect.name not in MYSQL_DIALECTS:
        return False
    cached = _partitioned.get(engine)
    if cached is not None:
        return cached
    with engine.connect() as connection:
        answer = MySQLPartitioning().layout(connection, "task", "task_id") is not None
    _partitioned.put(engine, answer)
    return answer


def forget_layout(engine: Engine) -> None:
    """Ask the catalogue again next time (after this process changed the partitioning)."""
    _partitioned.forget(engine)
