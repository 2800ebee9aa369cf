"""What every command shares: the --url, --json and --debug options, opening the database,
and turning any failure into one or two lines that say what to do."""

from __future__ import annotations

import json
import os
import sys
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any, TypeVar

import click
from rich.console import Console
from sqlalchemy import URL, Engine

from asynctaskmanager.errors import AsyncTaskManagerError
from asynctaskmanager.infrastructure import migrations
from asynctaskmanager.infrastructure.engine import DATABASE_URL_ENV, connect, resolve_url
from asynctaskmanager.storage import Storage, open_storage

F = TypeVar("F", bound=Callable[..., Any])

PROG = "asynctaskmanager"
DEBUG_ENV = "ASYNCTASK_DEBUG"


def url_option(command: F) -> F:
    return click.option(
        "--url",
        metavar="URL",
        help=f"Database URL (default: ${DATABASE_URL_ENV}, else sqlite:///asynctask.db).",
    )(command)


DEBUG_KEY = "asynctaskmanager.debug"


def _remember_debug(context: click.Context, _parameter: click.Parameter, value: bool) -> None:
    # Context.meta is shared by the whole command chain: the group reads it on a failure.
    if value:
        context.meta[DEBUG_KEY] = True


def debug_option(command: F) -> F:
    return click.option(
        "--debug",
        is_flag=True,
        expose_value=False,
        is_eager=True,
        callback=_remember_debug,
        help="Show the full traceback of a failure.",
    )(command)


def json_option(command: F) -> F:
    return click.option("--json", "as_json", is_flag=True, help="Print JSON instead of tables.")(
        command
    )


def common(command: F) -> F:
    """--url and --debug, which every command takes."""
    return url_option(debug_option(command))


def console() -> Console:
    return Console(highlight=False)


def print_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, default=_json_default, ensure_ascii=False))


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, timedelta):
        return value.total_seconds()
    if hasattr(value, "value"):  # enums
        return value.value
    return str(value)


def database_url(url: str | None) -> URL:
    return resolve_url(url)


@contextmanager
def storage_for(
    url: str | None, *, check_schema: bool = True, must_exist: bool = True
) -> Iterator[Storage]:
    """The storage of ``--url``. ``must_exist``: refuse a missing SQLite file rather than
    create an empty one at a mistyped path."""
    resolved = database_url(url)
    if must_exist:
        migrations.require_existing_sqlite_file(resolved)
    with migrations.library_errors(resolved):
        storage = open_storage(resolved, check_schema=check_schema)
    try:
        with migrations.library_errors(storage.engine):
            yield storage
    finally:
        storage.close()


@contextmanager
def engine_for(url: str | None, *, must_exist: bool = True) -> Iterator[Engine]:
    resolved = database_url(url)
    if must_exist:
        migrations.require_existing_sqlite_file(resolved)
    engine = connect(resolved).engine
    try:
        with migrations.library_errors(engine):
            yield engine
    finally:
        engine.dispose()


def age(moment: datetime | None, now: datetime) -> str:
    if moment is None:
        return "-"
    return f"{human_duration(now - moment)} ago"


def human_duration(span: timedelta) -> str:
    seconds = int(max(span.total_seconds(), 0))
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    if seconds < 172800:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 86400}d{seconds % 86400 // 3600:02d}h"


# --- failures ---------------------------------------------------------------------------------


def debug_requested(context: click.Context | None) -> bool:
    if context is not None and context.meta.get(DEBUG_KEY):
        return True
    return os.environ.get(DEBUG_ENV, "") in ("1", "true", "yes")


def explain(error: BaseException) -> str:
    """One line (two at most) for a failure: what went wrong and what to do."""
    if isinstance(error, AsyncTaskManagerError):
        return _shorten(str(error))
    if isinstance(error, OSError):
        return _shorten(f"{error.strerror or error}") + (
            f": {error.filename}" if error.filename else ""
        )
    return (
        f"unexpected {type(error).__name__}: {_shorten(str(error))}\n"
        f"run the command again with --debug for the traceback, and report it"
    )


def report_failure(error: BaseException, debug: bool) -> int:
    if debug:
        traceback.print_exception(type(error), error, error.__traceback__, file=sys.stderr)
    for line in explain(error).splitlines():
        click.echo(f"{PROG}: {line}", err=True)
    return 1


def _shorten(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    first = lines[0] if lines else ""
    # Drop SQLAlchemy's "(Background on this error at: ...)" and driver noise.
    first = first.split(" (Background on this error")[0]
    return first if len(first) <= 400 else first[:397] + "..."
