"""Give every index a table-scoped name: ix_<table>_<column>.

Why: the spec reuses idx_status (task, worker) and idx_created_at (task, task_log). MySQL
scopes index names per table, SQLite per database, where the second CREATE INDEX fails. One
set of names that works on every backend lets one mapping and one ``alembic check`` serve
all of them. SQLite already has these names from revision 0001, so this runs on MySQL only.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _on_mysql() -> bool:
    """MySQL and MariaDB scope index names per table and compare keys case-insensitively
    by default; SQLite (and PostgreSQL) scope index names per schema and compare bytes."""
    return op.get_context().dialect.name in ("mysql", "mariadb")


# (table, column); the spec names each index idx_<column>.
INDEXED = [
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


def _rename(reverse: bool) -> None:
    if not _on_mysql():
        return
    for table, column in INDEXED:
        spec_name, scoped_name = f"idx_{column}", f"ix_{table}_{column}"
        old, new = (scoped_name, spec_name) if reverse else (spec_name, scoped_name)
        # RENAME INDEX: MySQL 5.7+, MariaDB 10.5.2+; metadata only, no table rebuild.
        op.execute(f"ALTER TABLE {table} RENAME INDEX {old} TO {new}")


def upgrade() -> None:
    _rename(reverse=False)


def downgrade() -> None:
    _rename(reverse=True)
