"""``status`` (the queue at a glance) and ``metrics`` (a Prometheus endpoint)."""

from __future__ import annotations

import threading
from datetime import timedelta

import click
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from asynctaskmanager.cli._common import (
    common,
    console,
    human_duration,
    json_option,
    print_json,
    storage_for,
)
from asynctaskmanager.errors import ConfigurationError
from asynctaskmanager.metrics import QueueCollector, QueueStats, collect_stats


@click.command()
@click.option(
    "--all",
    "include_finished",
    is_flag=True,
    help="Count finished tasks too (reads every finished task's index entry: slow on a "
    "large table).",
)
@click.option(
    "--window",
    type=click.IntRange(min=1, max=10_080),
    default=5,
    show_default=True,
    help="Minutes of task events to count.",
)
@json_option
@common
def status(include_finished: bool, window: int, as_json: bool, url: str | None) -> None:
    """The queue at a glance: tasks by status and type, the oldest due pending task, running
    tasks per worker, workers, and the recent events."""
    with storage_for(url) as storage:
        stats = collect_stats(
            storage, window=timedelta(minutes=window), include_finished=include_finished
        )
        dead_after = storage.queue.settings.dead_after
    if as_json:
        print_json(stats.as_dict())
        return
    _print_status(stats, dead_after)


def _print_status(stats: QueueStats, dead_after: timedelta) -> None:
    out = console()
    statuses = list(stats.by_status)
    table = Table(title="Tasks" + ("" if stats.include_finished else " (live; --all: finished)"))
    table.add_column("type")
    for name in statuses:
        table.add_column(name, justify="right")
    types = sorted({kind for _status, kind in stats.tasks})
    for kind in types:
        table.add_row(Text(kind), *(str(stats.tasks.get((name, kind), 0)) for name in statuses))
    table.add_row("[b]all[/b]", *(f"[b]{stats.by_status[name]}[/b]" for name in statuses))
    out.print(table)

    oldest = stats.oldest_due_pending_age
    out.print(
        "Oldest due pending task: "
        + ("none waiting" if oldest is None else f"waiting {human_duration(oldest)}")
    )
    running = ", ".join(f"{escape(w)} {n}" for w, n in sorted(stats.running_by_worker.items()))
    out.print(f"Running per worker: {running or 'none'}")
    workers = ", ".join(f"{name} {n}" for name, n in stats.workers.items())
    silent = stats.silent_online_workers
    out.print(
        f"Workers: {workers}"
        + (
            f"  [yellow]({silent} online but silent > {human_duration(dead_after)}: "
            "dead until a sweep)[/yellow]"
            if silent
            else ""
        )
    )
    events = ", ".join(f"{kind} {n}" for kind, n in sorted(stats.recent_events.items()))
    out.print(f"Events in the last {human_duration(stats.window)}: {events or 'none'}")


@click.command()
@click.option("--port", type=click.IntRange(1, 65535), required=True, help="Port to listen on.")
@click.option("--addr", default="0.0.0.0", show_default=True, help="Address to listen on.")
@click.option(
    "--settle",
    type=click.IntRange(min=0, max=3600),
    default=30,
    show_default=True,
    help="Seconds before a task event is counted (a late commit is not missed).",
)
@common
def metrics(port: int, addr: str, settle: int, url: str | None) -> None:
    """Serve the queue's metrics for Prometheus at http://ADDR:PORT/metrics."""
    from prometheus_client import CollectorRegistry, start_http_server

    with storage_for(url) as storage:
        registry = CollectorRegistry(auto_describe=False)
        registry.register(QueueCollector(storage, settle=timedelta(seconds=settle)))
        try:
            server, thread = start_http_server(port, addr, registry)
        except OSError as error:
            raise ConfigurationError(
                f"cannot listen on {addr}:{port} ({error.strerror or error}): choose another "
                "--port or --addr"
            ) from error
        console().print(f"serving metrics on http://{addr}:{port}/metrics (Ctrl-C stops)")
        try:
            threading.Event().wait()
        finally:
            server.shutdown()
            thread.join(5)
