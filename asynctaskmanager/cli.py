"""``asynctaskmanager upgrade``: bring a database to the newest schema without a checkout.

The database is ``--url``, else ``ASYNCTASK_DATABASE_URL``, else ``sqlite:///asynctask.db``.
"""

from __future__ import annotations

import argparse
import sys

from asynctaskmanager.errors import AsyncTaskManagerError
from asynctaskmanager.infrastructure import migrations
from asynctaskmanager.infrastructure.engine import DATABASE_URL_ENV, build_engine, resolve_url


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
        command.add_argument(
            "--url", help=f"database URL (default: ${DATABASE_URL_ENV} or the SQLite file)"
        )
        if name != "current":
            command.add_argument(
                "revision", nargs="?", default="head" if name == "upgrade" else None
            )
    args = parser.parse_args(argv)
    if args.command in ("downgrade", "stamp") and not args.revision:
        parser.error(f"{args.command} needs a revision, e.g. 'base' or '0001'")
    try:
        engine, _profile = build_engine(resolve_url(args.url))
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


if __name__ == "__main__":
    sys.exit(main())
