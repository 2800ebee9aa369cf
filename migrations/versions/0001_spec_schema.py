"""The spec's schema, as written: the four tables and their indexes.

On MySQL and MariaDB this is the spec's DDL exactly, so that a database the Go service
created can be adopted with ``alembic stamp 0001`` followed by ``alembic upgrade head``.

SQLite differs where it must: index names are scoped per database there, and the spec
reuses idx_status and idx_created_at, so on SQLite the indexes take the table-scoped names
that revision 0002 gives them on MySQL. SQLite has no ON UPDATE clause, so a trigger keeps
task_config.updated_at current.

PostgreSQL, like SQLite, scopes index names per schema and has no ON UPDATE clause: the same
table-scoped names, and a trigger. Its types are the ones a PostgreSQL user expects (the
README's deviations list gives the reasons): JSONB for JSON, timestamptz for TIMESTAMP,
and keys in the "C" collation, which compares and orders bytes as the other backends do.
No PostgreSQL database predates this, so its whole schema is made here.

Revision ID: 0001
Revises:
Create Date: 2026-11-27
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _on_mysql() -> bool:
    """MySQL and MariaDB scope index names per table and compare keys case-insensitively
    by default; SQLite (and PostgreSQL) scope index names per schema and compare bytes."""
    return op.get_context().dialect.name in ("mysql", "mariadb")


def _on_postgresql() -> bool:
    return op.get_context().dialect.name == "postgresql"


def _key() -> sa.String:
    return sa.String(64, collation="C") if _on_postgresql() else sa.String(64)


def _json() -> sa.types.TypeEngine[object]:
    return postgresql.JSONB() if _on_postgresql() else sa.JSON()


def _timestamp() -> sa.types.TypeEngine[object]:
    if _on_postgresql():
        # Default precision: a (0) column rounds a CURRENT_TIMESTAMP default up to half a
        # second ahead; the library truncates what it binds and reads instead.
        return postgresql.TIMESTAMP(timezone=True)
    return sa.TIMESTAMP()


def _current_timestamp_on_update() -> sa.TextClause:
    """The spec's ``ON UPDATE CURRENT_TIMESTAMP`` where the server has it; SQLite and
    PostgreSQL get a trigger (below) instead."""
    if _on_mysql():
        return sa.text("CURRENT_TIMESTAMP ON UPDATE CURRENT_TIMESTAMP")
    return NOW


MYSQL_TABLE = {"mysql_engine": "InnoDB", "mysql_charset": "utf8mb4"}
NOW = sa.text("CURRENT_TIMESTAMP")

# (table, column); the spec names each index idx_<column>.
SPEC_INDEXES = [
    ("task", "status"),
    ("task", "task_type"),
    ("task", "worker_id"),
    ("task", "created_at"),
    ("task_config", "enabled"),
    ("task_log", "task_id"),
    ("task_log", "log_type"),
    ("task_log", "created_at"),
    ("worker", "status"),
    ("worker", "last_heartbeat"),
]

# MySQL's ON UPDATE fires only when the row really changes and updated_at was not set; the
# trigger does the same, so a no-op UPDATE leaves updated_at alone on both.
TASK_CONFIG_COLUMNS = (
    "task_type",
    "task_name",
    "description",
    "executor_type",
    "executor_config",
    "default_timeout",
    "default_max_retry",
    "retry_strategy",
    "retry_delay",
    "backoff_rate",
    "max_concurrent",
    "enabled",
    "created_at",
)
_CHANGED = " OR ".join(f"NEW.{name} IS NOT OLD.{name}" for name in TASK_CONFIG_COLUMNS)
SQLITE_UPDATED_AT_TRIGGER = f"""
CREATE TRIGGER task_config_updated_at
AFTER UPDATE ON task_config
FOR EACH ROW WHEN NEW.updated_at IS OLD.updated_at AND ({_CHANGED})
BEGIN
    UPDATE task_config SET updated_at = CURRENT_TIMESTAMP WHERE task_type = NEW.task_type;
END
"""

# The same rule on PostgreSQL, before the row is written: only a real change that did not
# set updated_at itself moves it.
POSTGRES_UPDATED_AT_FUNCTION = """
CREATE FUNCTION task_config_updated_at() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.updated_at IS NOT DISTINCT FROM OLD.updated_at AND NEW IS DISTINCT FROM OLD THEN
        NEW.updated_at := CURRENT_TIMESTAMP;
    END IF;
    RETURN NEW;
END
$$
"""
POSTGRES_UPDATED_AT_TRIGGER = """
CREATE TRIGGER task_config_updated_at
BEFORE UPDATE ON task_config
FOR EACH ROW EXECUTE FUNCTION task_config_updated_at()
"""


def index_name(table: str, column: str) -> str:
    if _on_mysql():
        return f"idx_{column}"
    return f"ix_{table}_{column}"


def upgrade() -> None:
    op.create_table(
        "task",
        sa.Column("task_id", _key(), primary_key=True),
        sa.Column("task_type", _key(), nullable=False),
        sa.Column("priority", sa.Integer, nullable=False, server_default=sa.text("0")),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("payload", _json()),
        sa.Column("result", _json()),
        sa.Column("error_message", sa.Text),
        sa.Column("worker_id", _key()),
        sa.Column("retry_count", sa.Integer, nullable=False, server_default=sa.text("0")),
        sa.Column("max_retry", sa.Integer, nullable=False, server_default=sa.text("3")),
        sa.Column("timeout", sa.Integer, nullable=False, server_default=sa.text("30")),
        sa.Column("created_at", _timestamp(), nullable=False, server_default=NOW),
        sa.Column("scheduled_at", _timestamp(), nullable=True),
        sa.Column("started_at", _timestamp(), nullable=True),
        sa.Column("completed_at", _timestamp(), nullable=True),
        **MYSQL_TABLE,
    )
    op.create_table(
        "task_config",
        sa.Column("task_type", _key(), primary_key=True),
        sa.Column("task_name", sa.String(128), nullable=False),
        sa.Column("description", sa.Text),
        sa.Column("executor_type", sa.String(32), nullable=False),
        sa.Column("executor_config", _json()),
        sa.Column("default_timeout", sa.Integer, nullable=False, server_default=sa.text("30")),
        sa.Column("default_max_retry", sa.Integer, nullable=False, server_default=sa.text("3")),
        sa.Column("retry_strategy", sa.String(32), nullable=False),
        sa.Column("retry_delay", sa.Integer, nullable=False, server_default=sa.text("5")),
        sa.Column("backoff_rate", sa.Numeric(10, 2), nullable=False, server_default="2.00"),
        sa.Column("max_concurrent", sa.Integer, nullable=False, server_default=sa.text("10")),
        sa.Column("enabled", sa.Boolean, nullable=False, server_default="1"),
        sa.Column("created_at", _timestamp(), nullable=False, server_default=NOW),
        sa.Column(
            "updated_at",
            _timestamp(),
            nullable=False,
            server_default=_current_timestamp_on_update(),
        ),
        **MYSQL_TABLE,
    )
    op.create_table(
        "task_log",
        sa.Column("log_id", _key(), primary_key=True),
        sa.Column("task_id", _key(), nullable=False),
        sa.Column("log_type", sa.String(32), nullable=False),
        sa.Column("from_status", sa.String(32)),
        sa.Column("to_status", sa.String(32)),
        sa.Column("message", sa.Text),
        sa.Column("details", _json()),
        sa.Column("created_at", _timestamp(), nullable=False, server_default=NOW),
        **MYSQL_TABLE,
    )
    op.create_table(
        "worker",
        sa.Column("worker_id", _key(), primary_key=True),
        sa.Column("worker_name", sa.String(128), nullable=False),
        sa.Column("address", sa.String(256), nullable=False),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("capacity", sa.Integer, nullable=False, server_default=sa.text("10")),
        sa.Column("current_load", sa.Integer, nullable=False, server_default=sa.text("0")),
        sa.Column("supported_types", _json()),
        sa.Column("last_heartbeat", _timestamp(), nullable=False, server_default=NOW),
        **MYSQL_TABLE,
    )
    for table, column in SPEC_INDEXES:
        op.create_index(index_name(table, column), table, [column])
    if op.get_context().dialect.name == "sqlite":
        op.execute(SQLITE_UPDATED_AT_TRIGGER)
    if _on_postgresql():
        op.execute(POSTGRES_UPDATED_AT_FUNCTION)
        op.execute(POSTGRES_UPDATED_AT_TRIGGER)


def downgrade() -> None:
    for table in ("worker", "task_log", "task_config", "task"):
        op.drop_table(table)  # with its triggers
    if _on_postgresql():
        op.execute("DROP FUNCTION task_config_updated_at()")
