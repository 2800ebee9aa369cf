"""``tasks list|show|retry|cancel`` and ``workers list``."""

from __future__ import annotations

import dataclasses
import json
from datetime import datetime, timezone
from enum import Enum
from typing import Any

import click
from rich.table import Table
from rich.text import Text

from asynctaskmanager.cli._common import age, common, console, json_option, print_json, storage_for
from asynctaskmanager.domain.enums import TaskStatus, WorkerStatus
from asynctaskmanager.domain.models import Task, TaskLog, Worker
from asynctaskmanager.domain.repositories import TaskFilter, TaskOrder

_TASK_STATUSES = click.Choice([status.value for status in TaskStatus])
_WORKER_STATUSES = click.Choice([status.value for status in WorkerStatus])


@click.group()
def tasks() -> None:
    """List, show, retry and cancel tasks."""


@tasks.command("list")
@click.option("--status", "statuses", type=_TASK_STATUSES, multiple=True, help="Repeatable.")
@click.option("--type", "task_type", help="Only tasks of this type.")
@click.option("--worker", "worker_id", help="Only tasks held by this worker.")
@click.option("--limit", type=click.IntRange(1, 10_000), default=50, show_default=True)
@click.option(
    "--order",
    type=click.Choice([order.value for order in TaskOrder]),
    default=TaskOrder.CREATED_AT.value,
    show_default=True,
)
@click.option("--oldest-first", is_flag=True, help="Oldest first (default: newest first).")
@json_option
@common
def list_tasks(
    statuses: tuple[str, ...],
    task_type: str | None,
    worker_id: str | None,
    limit: int,
    order: str,
    oldest_first: bool,
    as_json: bool,
    url: str | None,
) -> None:
    """List tasks, newest first."""
    where = TaskFilter(
        status=[TaskStatus(s) for s in statuses] or None,
        task_type=task_type,
        worker_id=worker_id,
    )
    with storage_for(url) as storage:
        found = storage.tasks.list(
            where, limit=limit, order_by=TaskOrder(order), descending=not oldest_first
        )
    if as_json:
        print_json([_plain(task) for task in found])
        return
    now = datetime.now(timezone.utc)
    table = Table(title=f"{len(found)} task(s)")
    for column in ("task_id", "type", "status", "prio", "try", "worker", "created", "error"):
        table.add_column(column, no_wrap=column == "task_id", overflow="ellipsis")
    for task in found:
        table.add_row(
            Text(task.task_id),
            Text(task.task_type),
            _status(task.status),
            task.priority.name.lower(),
            f"{task.retry_count}/{task.max_retry}",
            Text(task.worker_id or "-"),
            age(task.created_at, now),
            Text((task.error_message or "")[:60]),
        )
    console().print(table)


@tasks.command("show")
@click.argument("task_id")
@json_option
@common
def show_task(task_id: str, as_json: bool, url: str | None) -> None:
    """Print a task and its log chain."""
    with storage_for(url) as storage:
        task = storage.tasks.get(task_id)
        logs = storage.task_logs.list_for_task(task_id)
    if as_json:
        print_json({"task": _plain(task), "log": [_plain(log) for log in logs]})
        return
    out = console()
    fields = Table.grid(padding=(0, 2))
    fields.add_column(style="bold")
    fields.add_column(overflow="fold")
    for name, value in _plain(task).items():
        if name == "status":
            fields.add_row(name, _status(task.status))
            continue
        if isinstance(value, (dict, list)):
            value = json.dumps(value, ensure_ascii=False)
        fields.add_row(name, Text("-" if value is None else str(value)))
    out.print(fields)
    chain = Table(title=f"log ({len(logs)} rows)")
    for column in ("at", "type", "from", "to", "message"):
        chain.add_column(column, overflow="fold")
    for log in logs:
        chain.add_row(
            log.created_at.isoformat() if log.created_at else "-",
            log.log_type.value,
            log.from_status.value if log.from_status else "-",
            log.to_status.value if log.to_status else "-",
            Text(log.message or ""),
        )
    out.print(chain)


@tasks.command("retry")
@click.argument("task_id")
@click.option("--reason", help="Written to the task's log.")
@common
def retry(task_id: str, reason: str | None, url: str | None) -> None:
    """Re-queue a failed or cancelled task, due now, with its attempts reset."""
    with storage_for(url) as storage:
        task = storage.queue.requeue(task_id, reason)
    click.echo(f"task {task.task_id} is {task.status.value} again")


@tasks.command("cancel")
@click.argument("task_id")
@click.option("--reason", help="Stored as the task's error message and in its log.")
@common
def cancel(task_id: str, reason: str | None, url: str | None) -> None:
    """Cancel a pending or running task."""
    with storage_for(url) as storage:
        cancelled = storage.queue.cancel(task_id, reason)
        now = storage.tasks.get(task_id).status.value
    if not cancelled:
        raise click.ClickException(
            f"task {task_id} changed while being cancelled and is now {now}: look at it with "
            f"'asynctaskmanager tasks show {task_id}'"
        )
    click.echo(f"task {task_id} is cancelled")


@click.group()
def workers() -> None:
    """List workers."""


@workers.command("list")
@click.option("--status", type=_WORKER_STATUSES, help="Only workers in this status.")
@click.option("--limit", type=click.IntRange(1, 10_000), default=200, show_default=True)
@json_option
@common
def list_workers(status: str | None, limit: int, as_json: bool, url: str | None) -> None:
    """List workers, with their load and last heartbeat."""
    with storage_for(url) as storage:
        found = storage.workers.list(status=WorkerStatus(status) if status else None, limit=limit)
        dead_after = storage.queue.settings.dead_after
    if as_json:
        print_json([_plain(worker) for worker in found])
        return
    now = datetime.now(timezone.utc)
    table = Table(title=f"{len(found)} worker(s)")
    for column in ("worker_id", "name", "address", "status", "load", "types", "heartbeat"):
        table.add_column(column)
    for worker in found:
        silent = (
            worker.status is WorkerStatus.ONLINE
            and worker.last_heartbeat is not None
            and now - worker.last_heartbeat > dead_after
        )
        table.add_row(
            Text(worker.worker_id),
            Text(worker.worker_name),
            Text(worker.address),
            worker.status.value + (" [yellow](silent)[/yellow]" if silent else ""),
            f"{worker.current_load}/{worker.capacity}",
            Text("all" if worker.supported_types is None else ",".join(worker.supported_types)),
            age(worker.last_heartbeat, now),
        )
    console().print(table)


_STATUS_STYLE = {
    TaskStatus.PENDING: "cyan",
    TaskStatus.RUNNING: "blue",
    TaskStatus.COMPLETED: "green",
    TaskStatus.FAILED: "red",
    TaskStatus.CANCELLED: "yellow",
}


def _status(status: TaskStatus) -> str:
    return f"[{_STATUS_STYLE[status]}]{status.value}[/]"


def _plain(record: Task | TaskLog | Worker) -> dict[str, Any]:
    """A record's fields as JSON-ready data (enums by value), in declaration order."""
    return {
        name: value.value if isinstance(value, Enum) else value
        for name, value in dataclasses.asdict(record).items()
    }
