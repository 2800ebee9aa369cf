"""procrastinate, the PostgreSQL task queue, as the peer of bench/postgres.py.

In a module of its own: procrastinate wants its app defined outside the ``__main__`` module
(the worker processes import it by name).
"""

from __future__ import annotations

import multiprocessing
import time
from typing import Any

from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool

from asynctaskmanager.infrastructure.engine import resolve_url

SPAWN = multiprocessing.get_context("spawn")


def procrastinate_app(url: str) -> Any:
    """A procrastinate app on ``url`` with one no-op task, ``bench``, on the queue ``bench``."""
    import procrastinate

    parsed = resolve_url(url)
    conninfo = (
        f"host={parsed.host or '127.0.0.1'} port={parsed.port or 5432} "
        f"user={parsed.username or 'postgres'} dbname={parsed.database}"
        + (f" password={parsed.password}" if parsed.password else "")
    )
    app = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=conninfo))

    @app.task(name="bench", queue="bench")
    def bench_task(**_kwargs: Any) -> None:
        return None

    return app


def procrastinate_worker(url: str, ready: Any, go: Any, out: Any) -> None:
    try:
        app = procrastinate_app(url)
        ready.put(1)
        go.wait()
        app.run_worker(
            queues=["bench"],
            wait=False,
            concurrency=1,
            listen_notify=False,
            delete_jobs="never",
            install_signal_handlers=False,
        )
        out.put((time.monotonic(), None))
    except BaseException as error:
        ready.put(1)
        out.put((time.monotonic(), repr(error)))


def procrastinate_drain(url: str, processes: int) -> float:
    ready, out = SPAWN.Queue(), SPAWN.Queue()
    go = SPAWN.Event()
    children = [
        SPAWN.Process(target=procrastinate_worker, args=(url, ready, go, out), daemon=True)
        for _ in range(processes)
    ]
    for child in children:
        child.start()
    for _ in children:
        ready.get(timeout=120)
    started = time.monotonic()
    go.set()
    results = [out.get(timeout=600) for _ in children]
    for child in children:
        child.join(30)
    errors = [error for _, error in results if error]
    if errors:
        raise RuntimeError(f"procrastinate worker failed: {errors[0]}")
    return max(stamp for stamp, _ in results) - started


def procrastinate_count(url: str, status: str) -> int:
    engine = create_engine(resolve_url(url), poolclass=NullPool)
    try:
        with engine.connect() as connection:
            return int(
                connection.execute(
                    text("SELECT count(*) FROM procrastinate_jobs WHERE status = :s"),
                    {"s": status},
                ).scalar_one()
            )
    finally:
        engine.dispose()


def procrastinate_empty(url: str) -> None:
    engine = create_engine(resolve_url(url), poolclass=NullPool)
    try:
        with engine.begin() as connection:
            connection.execute(
                text("TRUNCATE procrastinate_jobs, procrastinate_events RESTART IDENTITY CASCADE")
            )
    finally:
        engine.dispose()
