"""Compare keys byte for byte on MySQL: utf8mb4_bin on every id column.

Why: the default collation (utf8mb4_general_ci) makes 'Task-1' and 'task-1' the same key on
MySQL and MariaDB while SQLite keeps them apart. Exact match is the rule on every backend.
(Trailing spaces cannot differ either: the library refuses keys with surrounding space.)
SQLite already compares bytes, so this runs on MySQL only.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-27
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _on_mysql() -> bool:
    """MySQL and MariaDB scope index names per table and compare keys case-insensitively
    by default; SQLite (and PostgreSQL) scope index names per schema and compare bytes."""
    return op.get_context().dialect.name in ("mysql", "mariadb")


# (table, column, nullable)
KEY_COLUMNS = [
    ("task", "task_id", False),
    ("task", "task_type", False),
    ("task", "worker_id", True),
    ("task_config", "task_type", False),
    ("task_log", "log_id", False),
    ("task_log", "task_id", False),
    ("worker", "worker_id", False),
]


def _set_collation(collation: str | None) -> None:
    if not _on_mysql():
        return
    for table, column, nullable in KEY_COLUMNS:
        op.alter_column(
            table,
            column,
            existing_type=sa.String(64),
            type_=mysql.VARCHAR(64, collation=collation),
            existing_nullable=nullable,
        )


def upgrade() -> None:
    _set_collation("utf8mb4_bin")


def downgrade() -> None:
    # No COLLATE: the column goes back to the table default, whatever the server's is.
    _set_collation(None)
