"""``asynctaskmanager worker``: the hook for the worker runtime (``asynctaskmanager.worker``,
written separately). Imported only when the command runs, so that every other command works
without it."""

from __future__ import annotations

import importlib

import click

from asynctaskmanager.cli._common import common
from asynctaskmanager.errors import ConfigurationError


@click.command()
@click.option(
    "--app",
    "app_path",
    required=True,
    metavar="MODULE:HANDLERS",
    help="Where the task handlers are, e.g. myproject.tasks:handlers.",
)
@click.option(
    "--concurrency",
    type=click.IntRange(min=1),
    default=4,
    show_default=True,
    help="Tasks run at once by this worker.",
)
@click.option("--burst", is_flag=True, help="Quit once no task is left to claim.")
@common
def worker(app_path: str, concurrency: int, burst: bool, url: str | None) -> None:
    """Run a worker: claim tasks and run the handlers of APP on them."""
    try:
        runtime = importlib.import_module("asynctaskmanager.worker")
    except ModuleNotFoundError as error:
        if error.name not in ("asynctaskmanager.worker", "asynctaskmanager"):
            raise
        raise ConfigurationError(
            "this installation has no worker runtime (asynctaskmanager.worker): "
            "upgrade the asynctaskmanager package"
        ) from error
    status: int = runtime.run_from_app(app_path, url, concurrency, burst)
    raise click.exceptions.Exit(status)
