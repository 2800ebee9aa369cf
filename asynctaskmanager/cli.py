"""``asynctaskmanager upgrade``: bring a database to the newest schema without a checkout.

``asynctaskmanager prune --days 30`` deletes the tasks (and their log rows) that finished
more than 30 days ago, for a cron job. The database is ``--url``, else
``ASYNCTASK_DATABASE_URL``, else ``sqlite:///asynctask.db``.
"""

from __future__ import annotations

import argparse
import math
import sys
from datetime import timedelta

from asynctaskmanager.errors import AsyncTaskManagerError, ValidationError
from asynctaskmanager.infrastructure import migrations
from asynctaskmanager.infrastructure.engine import DATABASE_URL_ENV, connect
from asynctaskmanager.storage import open_storage

URL_HELP = f"database URL (default: ${DATABASE_URL_ENV} or the SQLite file)"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="asynctaskmanager", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    for name, help_text in (
        ("upgrade", "migrate the database to a revision (default: head)"),
        ("downgrade", "migrate the database down to a revision"),
        ("stamp", "record a revision without running it (adopt a spec-DDL database: stamp 0001)"),
        ("current", "print the database's schema revision"),
    ):
        command = commands.add_parser(name, help=help_text)
        command.add_argument("--url", help=URL_HELP)
        if name != "current":
            command.add_argument(
                "revision", nargs="?", default="head" if name == "upgrade" else None
            )
    prune = commands.add_parser("prune", help="delete tasks that finished DAYS days ago or more")
    prune.add_argument("--url", help=URL_HELP)
    prune.add_argument("--days", type=float, required=True, help="age of the finished tasks")
    prune.add_argument("--batch-size", type=int, default=1000, help="tasks per transaction")
    args = parser.parse_args(argv)
    if args.command == "prune":
        return _prune(args.url, args.days, args.batch_size)
    if args.command in ("downgrade", "stamp") and not args.revision:
        parser.error(f"{args.command} needs a revision, e.g. 'base' or '0001'")
    try:
        engine = connect(args.url).engine
        try:
            if args.command == "upgrade":
                migrations.upgrade(engine, args.revision)
            elif args.command == "downgrade":
                migrations.downgrade(engine, args.revision)
            elif args.command == "stamp":
                migrations.stamp(engine, args.revision)
            print(migrations.current_revision(engine) or "base")
        finally:
            engine.dispose()
    except AsyncTaskManagerError as error:
        print(f"asynctaskmanager: {error}", file=sys.stderr)
        return 1
    return 0


def _prune(url: str | None, days: float, batch_size: int) -> int:
    try:
        if not math.isfinite(days) or not 0 <= days <= timedelta.max.days:
            raise ValidationError(
                "days", f"must be a number between 0 and {timedelta.max.days}", days
            )
        with open_storage(url) as storage:
            report = storage.queue.prune(timedelta(days=days), batch_size=batch_size)
    except AsyncTaskManagerError as error:
        print(f"asynctaskmanager: {error}", file=sys.stderr)
        return 1
    print(
        f"pruned {report.tasks} tasks, {report.logs} log rows and {report.workers} workers "
        f"that ended before {report.cutoff.isoformat()}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
