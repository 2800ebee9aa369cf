"""``asynctaskmanager partitions status|rotate``: the monthly partitions of ``task`` and
``task_log`` (MySQL and MariaDB), for an operator or a cron job."""

from __future__ import annotations

import dataclasses

import click
from rich.table import Table

from asynctaskmanager.cli._common import common, console, json_option, print_json, storage_for
from asynctaskmanager.partitions import (
    DEFAULT_AHEAD,
    DEFAULT_LOCK_WAIT_SECONDS,
    partition_status,
    rotate,
)


@click.group()
def partitions() -> None:
    """Show and rotate the monthly partitions (MySQL/MariaDB, after enable())."""


@partitions.command("status")
@json_option
@common
def show_status(as_json: bool, url: str | None) -> None:
    """Each partition: its bounds (UTC), row estimate, and unfinished tasks."""
    with storage_for(url) as storage:
        infos = partition_status(storage)
    if as_json:
        print_json([dataclasses.asdict(info) for info in infos])
        return
    table = Table("table", "partition", "from", "to", "rows (est.)", "unfinished")
    for info in infos:
        table.add_row(
            info.table,
            info.name,
            "-" if info.lower is None else info.lower.isoformat(),
            "-" if info.upper is None else info.upper.isoformat(),
            f"{info.row_estimate:,}",
            "-" if info.unfinished is None else f"{info.unfinished:,}",
        )
    console().print(table)


@partitions.command("rotate")
@click.option(
    "--ahead",
    type=click.IntRange(min=1),
    default=DEFAULT_AHEAD,
    show_default=True,
    help="Empty future months to keep.",
)
@click.option(
    "--retain-months",
    type=click.IntRange(min=1),
    default=12,
    show_default=True,
    help="Whole months kept before the current one; older months whose tasks are all final "
    "are dropped.",
)
@click.option("--dry-run", is_flag=True, help="Print the SQL it would run, and run nothing.")
@click.option(
    "--lock-wait",
    "lock_wait",
    type=click.IntRange(min=1),
    default=DEFAULT_LOCK_WAIT_SECONDS,
    show_default=True,
    help="Seconds a DDL statement may wait for its lock before it gives up until next time.",
)
@common
def rotate_command(
    ahead: int, retain_months: int, dry_run: bool, lock_wait: int, url: str | None
) -> None:
    """Keep empty months ahead and drop old ones; exits 1 if something stopped it."""
    with storage_for(url) as storage:
        report = rotate(
            storage,
            ahead=ahead,
            retain_months=retain_months,
            dry_run=dry_run,
            lock_wait_seconds=lock_wait,
        )
    for line in report.lines():
        click.echo(line)
    if not report.complete:
        raise click.exceptions.Exit(1)
