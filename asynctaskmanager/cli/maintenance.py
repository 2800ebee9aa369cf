"""``prune`` (with a progress bar) and the migration commands: ``current``, ``upgrade``,
``downgrade``, ``stamp``, ``history``."""

from __future__ import annotations

import math
from datetime import timedelta

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from sqlalchemy import func, select

from asynctaskmanager.cli._common import (
    common,
    console,
    engine_for,
    json_option,
    print_json,
    storage_for,
)
from asynctaskmanager.domain.enums import TaskStatus
from asynctaskmanager.domain.limits import TIMESTAMP_MIN
from asynctaskmanager.domain.repositories import TaskFilter
from asynctaskmanager.errors import ValidationError
from asynctaskmanager.infrastructure import migrations
from asynctaskmanager.infrastructure.schema import task_table as t
from asynctaskmanager.storage import Storage

FINAL = [TaskStatus.COMPLETED.value, TaskStatus.FAILED.value, TaskStatus.CANCELLED.value]


@click.command()
@click.option("--days", type=float, required=True, help="Age of the finished tasks to delete.")
@click.option(
    "--statuses",
    default=",".join(FINAL),
    show_default=True,
    help="Comma-separated final statuses to prune (e.g. completed,cancelled: keep failed).",
)
@click.option("--batch-size", type=int, default=1000, show_default=True, help="Tasks per batch.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@json_option
@common
def prune(
    days: float, statuses: str, batch_size: int, quiet: bool, as_json: bool, url: str | None
) -> None:
    """Delete the tasks (and their log rows) that finished DAYS days ago or more, and the
    workers offline that long."""
    if not math.isfinite(days) or not 0 <= days <= timedelta.max.days:
        raise ValidationError("days", f"must be a number between 0 and {timedelta.max.days}", days)
    chosen = _statuses(statuses)
    age = timedelta(days=days)
    with storage_for(url) as storage:
        estimate = _estimate(storage, chosen, age)
        progress = Progress(
            TextColumn("pruning"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=Console(stderr=True),
            disable=quiet or as_json,
            transient=True,
        )
        with progress:
            bar = progress.add_task("prune", total=estimate)
            report = storage.queue.prune(
                age,
                statuses=chosen,
                batch_size=batch_size,
                on_batch=lambda deleted: progress.advance(bar, deleted),
            )
    if as_json:
        print_json(
            {
                "tasks": report.tasks,
                "logs": report.logs,
                "workers": report.workers,
                "cutoff": report.cutoff,
                "partitions": list(report.partitions),
            }
        )
        return
    console().print(
        f"pruned {report.tasks} tasks, {report.logs} log rows and {report.workers} workers "
        f"that ended before {report.cutoff.isoformat()}"
    )
    if report.partitions:
        console().print(f"dropped whole month partitions: {', '.join(report.partitions)}")


def _statuses(text: str) -> list[TaskStatus]:
    names = [name.strip().lower() for name in text.split(",") if name.strip()]
    if not names or any(name not in FINAL for name in names):
        raise ValidationError("statuses", f"must be a comma-separated list of {FINAL}", text)
    return [TaskStatus(name) for name in names]


def _estimate(storage: Storage, statuses: list[TaskStatus], age: timedelta) -> int:
    """The bar's total: finished tasks created before the cutoff, a range of the created_at
    index. A task created before the cutoff that ended after it is counted but stays."""
    now = storage.run(
        lambda uow: uow.connection.execute(
            select(func.current_timestamp(type_=t.c.created_at.type))
        ).scalar_one(),
        read_only=True,
    )
    if age >= now - TIMESTAMP_MIN:
        return 0
    return storage.tasks.count(TaskFilter(status=statuses, created_to=now - age))


# --- migrations -----------------------------------------------------------------------------


@click.command()
@json_option
@common
def current(as_json: bool, url: str | None) -> None:
    """Print the database's schema revision ('base': none)."""
    with engine_for(url) as engine:
        revision = migrations.current_revision(engine)
    head = migrations.head_revision()
    if as_json:
        print_json({"revision": revision, "head": head, "up_to_date": revision == head})
        return
    click.echo(revision or "base")


@click.command()
@click.argument("revision", default="head")
@common
def upgrade(revision: str, url: str | None) -> None:
    """Migrate the database up to REVISION (default: head); creates a new SQLite file."""
    with engine_for(url, must_exist=False) as engine:
        migrations.upgrade(engine, revision)
        click.echo(migrations.current_revision(engine) or "base")


@click.command()
@click.argument("revision")
@common
def downgrade(revision: str, url: str | None) -> None:
    """Migrate the database down to REVISION ('base': drop every table)."""
    with engine_for(url) as engine:
        migrations.downgrade(engine, revision)
        click.echo(migrations.current_revision(engine) or "base")


@click.command()
@click.argument("revision")
@common
def stamp(revision: str, url: str | None) -> None:
    """Record REVISION without running it (adopt a spec-DDL database: stamp 0001)."""
    with engine_for(url) as engine:
        migrations.stamp(engine, revision)
        click.echo(migrations.current_revision(engine) or "base")


@click.command()
@click.option("--url", metavar="URL", help="Also mark the revision this database is at.")
@click.option("--debug", is_flag=True, expose_value=False, help="Show the full traceback.")
@json_option
def history(as_json: bool, url: str | None) -> None:
    """List the schema revisions, oldest first."""
    revisions = migrations.history()
    at = None
    if url is not None:
        with engine_for(url) as engine:
            at = migrations.current_revision(engine)
    head = migrations.head_revision()
    if as_json:
        print_json(
            [
                {
                    "revision": r.revision,
                    "down_revision": r.down_revision,
                    "doc": r.doc,
                    "head": r.revision == head,
                    "current": r.revision == at,
                }
                for r in revisions
            ]
        )
        return
    for r in revisions:
        marks = [
            name for name, on in (("head", r.revision == head), ("current", r.revision == at)) if on
        ]
        suffix = f" ({', '.join(marks)})" if marks else ""
        click.echo(f"{r.down_revision or 'base'} -> {r.revision}{suffix}: {r.doc}")
