"""``asynctaskmanager doctor``: checks of the database the library relies on.

Each check is a function of a :class:`DoctorContext` returning a :class:`CheckResult`
(name, ``ok``/``warn``/``fail``, detail), or None where it does not apply to the backend.
Later checks (partitions, cluster health) are added by appending to ``DOCTOR_CHECKS``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Literal

import click
from rich.table import Table
from rich.text import Text
from sqlalchemy import Connection, text

from asynctaskmanager.cli._common import common, console, json_option, print_json, storage_for
from asynctaskmanager.infrastructure import migrations
from asynctaskmanager.infrastructure.dialects.mysql import cluster_status
from asynctaskmanager.metrics import collect_stats
from asynctaskmanager.storage import Storage

Level = Literal["ok", "warn", "fail"]
CLAIM_INDEX = "ix_task_claim"


@dataclass(frozen=True)
class CheckResult:
    name: str
    level: Level
    detail: str


@dataclass
class DoctorContext:
    storage: Storage
    connection: Connection

    @property
    def is_mysql(self) -> bool:
        return self.connection.dialect.name == "mysql"

    @property
    def is_postgresql(self) -> bool:
        return self.connection.dialect.name == "postgresql"

    @property
    def is_mariadb(self) -> bool:
        return bool(getattr(self.connection.dialect, "is_mariadb", False))

    @property
    def version(self) -> tuple[int, ...]:
        return tuple(
            part
            for part in self.connection.dialect.server_version_info or ()
            if isinstance(part, int)
        )


Check = Callable[[DoctorContext], "CheckResult | None"]


def check_server(context: DoctorContext) -> CheckResult:
    if context.is_mysql:
        version = context.connection.execute(text("SELECT VERSION()")).scalar_one()
        kind = "MariaDB" if context.is_mariadb else "MySQL"
        return CheckResult("server", "ok", f"{kind} {version}")
    if context.is_postgresql:
        version = context.connection.execute(text("SHOW server_version")).scalar_one()
        return CheckResult("server", "ok", f"PostgreSQL {version}")
    version = context.connection.execute(text("SELECT sqlite_version()")).scalar_one()
    return CheckResult("server", "ok", f"SQLite {version}")


def check_schema_revision(context: DoctorContext) -> CheckResult:
    head = migrations.head_revision()
    revision = migrations.current_revision(context.storage.engine)
    url = migrations.display_url(context.storage.engine.url)
    if revision == head:
        return CheckResult("schema revision", "ok", f"{revision} (head)")
    if revision is None:
        return CheckResult(
            "schema revision",
            "fail",
            f"no revision (empty or spec-DDL database): 'asynctaskmanager upgrade --url {url}' "
            f"(a spec-DDL one needs 'asynctaskmanager stamp {migrations.FIRST_REVISION}' first)",
        )
    if not migrations.is_known(revision):
        return CheckResult(
            "schema revision", "fail", f"{revision}, unknown to this library (head {head})"
        )
    return CheckResult(
        "schema revision",
        "fail",
        f"{revision}, behind head {head}: run 'asynctaskmanager upgrade --url {url}'",
    )


def check_skip_locked(context: DoctorContext) -> CheckResult | None:
    if not (context.is_mysql or context.is_postgresql):
        return None  # SQLite has one writer; BEGIN IMMEDIATE is its lock
    if context.storage.runner.skip_locked():
        return CheckResult("SKIP LOCKED", "ok", "supported: claimers pass each other's locks")
    need = "MariaDB 10.6" if context.is_mariadb else "MySQL 8.0.1"
    return CheckResult(
        "SKIP LOCKED",
        "warn",
        f"not supported (needs {need}): claimers of one type wait for each other",
    )


def check_desc_index(context: DoctorContext) -> CheckResult:
    """The claim index's priority DESC: honoured by SQLite, MySQL 8 and MariaDB >= 10.8;
    older servers parse it and build ASC, and the claim then sorts."""
    if context.is_mysql:
        collation = context.connection.execute(
            text(
                "SELECT COLLATION FROM information_schema.STATISTICS WHERE "
                "TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'task' AND INDEX_NAME = :index "
                "AND COLUMN_NAME = 'priority'"
            ),
            {"index": CLAIM_INDEX},
        ).scalar()
        supported = context.version >= ((10, 8) if context.is_mariadb else (8, 0))
    elif context.is_postgresql:
        # indoption bit 1 is DESC, per key column; priority is the index's second column.
        option = context.connection.execute(
            text(
                "SELECT (i.indoption::int2[])[1] FROM pg_index i "
                "JOIN pg_class c ON c.oid = i.indexrelid WHERE c.relname = :index"
            ),
            {"index": CLAIM_INDEX},
        ).scalar()
        collation = None if option is None else ("D" if option & 1 else "A")
        supported = True
    else:
        rows = context.connection.exec_driver_sql(f"PRAGMA index_xinfo('{CLAIM_INDEX}')").all()
        found = [row for row in rows if row[2] == "priority"]
        collation = None if not found else ("D" if found[0][3] else "A")
        supported = True
    if collation is None:
        return CheckResult("claim index", "fail", f"{CLAIM_INDEX} is missing: run upgrade")
    if collation == "D":
        return CheckResult("claim index", "ok", f"{CLAIM_INDEX} has priority DESC")
    why = "the server ignores DESC in indexes" if not supported else "built without DESC"
    return CheckResult(
        "claim index",
        "warn",
        f"{CLAIM_INDEX} has priority ASC ({why}): claims sort instead of reading in order",
    )


def check_time_zone(context: DoctorContext) -> CheckResult | None:
    if context.is_postgresql:
        # timestamptz holds instants: the zone changes only how psql shows them.
        zone = context.connection.execute(text("SHOW TimeZone")).scalar_one()
        return CheckResult("session time zone", "ok", str(zone))
    if not context.is_mysql:
        return None
    zone = context.connection.execute(text("SELECT @@session.time_zone")).scalar_one()
    if zone in ("+00:00", "UTC"):
        return CheckResult("session time zone", "ok", str(zone))
    return CheckResult(
        "session time zone", "fail", f"{zone}: TIMESTAMP values would shift (expected +00:00)"
    )


def check_sql_mode(context: DoctorContext) -> CheckResult | None:
    if not context.is_mysql:
        return None
    mode = str(context.connection.execute(text("SELECT @@session.sql_mode")).scalar_one())
    if "STRICT_TRANS_TABLES" in mode or "STRICT_ALL_TABLES" in mode:
        return CheckResult("sql_mode", "ok", mode)
    return CheckResult("sql_mode", "fail", f"{mode or '(empty)'}: not strict, bad values stored")


def check_workers(context: DoctorContext) -> CheckResult:
    stats = collect_stats(context.storage)
    silent = stats.silent_online_workers
    online = stats.workers.get("online", 0)
    if silent:
        return CheckResult(
            "workers",
            "warn",
            f"{silent} of {online} online workers are silent: is a sweep running?",
        )
    return CheckResult(
        "workers", "ok", f"{online} online, {stats.workers.get('offline', 0)} offline"
    )


def check_cluster(context: DoctorContext) -> CheckResult | None:
    """A Galera node's view of its cluster: fails where this node cannot serve (out of the
    primary component, not ready); warns below three nodes, where one loss stops writes."""
    if not context.is_mysql:
        return None
    if not context.storage.runner.cluster.is_cluster:
        return CheckResult("cluster", "ok", "a single server (wsrep_on is off or absent)")
    status = cluster_status(context.connection)
    size = int(status.get("wsrep_cluster_size") or 0)
    index = status.get("wsrep_local_index", "?")
    component = status.get("wsrep_cluster_status", "?")
    ready = status.get("wsrep_ready", "?")
    detail = (
        f"Galera, {size} nodes, this node's index {index}, {component}, "
        f"ready {ready}, {status.get('wsrep_local_state_comment', '?')}"
    )
    if component != "Primary" or ready != "ON":
        return CheckResult("cluster", "fail", f"{detail}: this node cannot serve")
    if size < 3:
        return CheckResult("cluster", "warn", f"{detail}: one more loss stops writes")
    return CheckResult("cluster", "ok", detail)


# Run in order. Append here: partitions and cluster checks come later.
DOCTOR_CHECKS: list[Check] = [
    check_server,
    check_schema_revision,
    check_skip_locked,
    check_desc_index,
    check_time_zone,
    check_sql_mode,
    check_cluster,
    check_workers,
]
# Checks that read the library's tables; skipped while the schema is not at head.
_NEEDS_SCHEMA: set[Check] = {check_workers}


def run_checks(storage: Storage, checks: list[Check] | None = None) -> list[CheckResult]:
    """Each check on a connection of its own, closed before the next one starts (on SQLite
    an open transaction would lock out the checks that read through the storage)."""
    results: list[CheckResult] = []
    for check in checks if checks is not None else DOCTOR_CHECKS:
        schema_ok = all(r.level != "fail" for r in results if r.name == "schema revision")
        if check in _NEEDS_SCHEMA and not schema_ok:
            continue
        with storage.engine.connect() as connection:
            result = check(DoctorContext(storage, connection))
        if result is not None:
            results.append(result)
    return results


_STYLE = {"ok": "green", "warn": "yellow", "fail": "red"}


@click.command()
@json_option
@common
def doctor(as_json: bool, url: str | None) -> None:
    """Check the database: schema revision, server features, session settings, workers.
    Exits with status 1 when a check fails."""
    with storage_for(url, check_schema=False) as storage:
        results = run_checks(storage)
    if as_json:
        print_json(
            {
                "checked_at": datetime.now(timezone.utc),
                "checks": [r.__dict__ for r in results],
            }
        )
    else:
        table = Table(show_header=False, box=None)
        table.add_column(no_wrap=True)
        table.add_column(no_wrap=True)
        table.add_column(overflow="fold")
        for result in results:
            table.add_row(
                Text(result.level.upper(), style=_STYLE[result.level]),
                Text(result.name, style="bold"),
                Text(result.detail),
            )
        console().print(table)
    if any(r.level == "fail" for r in results):
        raise click.exceptions.Exit(1)
