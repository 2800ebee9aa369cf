"""The ``asynctaskmanager`` command line: look at the queue, act on tasks, check the
database, migrate it, prune it, and serve its metrics.

The database is ``--url``, else ``ASYNCTASK_DATABASE_URL``, else ``sqlite:///asynctask.db``.
A failure prints one or two lines saying what to do and exits with status 1 (2 for a usage
error); ``--debug`` adds the traceback.
"""

from __future__ import annotations

import sys
from typing import Any

import click

from asynctaskmanager.cli._common import debug_requested, report_failure
from asynctaskmanager.cli.doctor import DOCTOR_CHECKS, CheckResult, doctor
from asynctaskmanager.cli.maintenance import current, downgrade, history, prune, stamp, upgrade
from asynctaskmanager.cli.observe import metrics, status
from asynctaskmanager.cli.partitions import partitions
from asynctaskmanager.cli.tasks import tasks, workers
from asynctaskmanager.cli.worker import worker


class _Commands(click.Group):
    """The group that turns any failure of a command into a few words and status 1."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise
        except KeyboardInterrupt:
            raise click.exceptions.Abort() from None
        except Exception as error:
            ctx.exit(report_failure(error, debug_requested(ctx)))


@click.group(
    cls=_Commands,
    name="asynctaskmanager",
    help="Look at the task queue, act on tasks, check the database, migrate it, prune it, "
    "and serve its metrics.\n\nThe database is --url, else $ASYNCTASK_DATABASE_URL, else "
    "sqlite:///asynctask.db. A failure prints what to do and exits with status 1; --debug "
    "adds the traceback.",
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@click.version_option(package_name="asynctaskmanager", prog_name="asynctaskmanager")
def cli() -> None:
    pass


for command in (
    status,
    tasks,
    workers,
    doctor,
    prune,
    metrics,
    current,
    upgrade,
    downgrade,
    stamp,
    history,
    partitions,
    worker,
):
    cli.add_command(command)


def main(argv: list[str] | None = None) -> int:
    """The console script. Returns the exit status; a usage error exits with status 2."""
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        # Without standalone mode, main returns the status a command exits with.
        status = cli.main(args=args, prog_name="asynctaskmanager", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("asynctaskmanager: interrupted", err=True)
        return 130
    except click.ClickException as error:
        error.show()
        if isinstance(error, click.UsageError):
            raise SystemExit(error.exit_code) from None
        return error.exit_code
    except KeyboardInterrupt:
        click.echo("asynctaskmanager: interrupted", err=True)
        return 130
    return status if isinstance(status, int) else 0


__all__ = ["DOCTOR_CHECKS", "CheckResult", "cli", "main"]
