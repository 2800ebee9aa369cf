"""Add the claim index: (status, priority DESC, created_at, task_id).

Why: the claim query is ``WHERE status = 'pending' ... ORDER BY priority DESC, created_at,
task_id LIMIT n FOR UPDATE SKIP LOCKED``. With the spec's single-column indexes it scans and
filesorts, and locks every pending row; eight claimers then deadlock. An ascending composite
index is ignored because the ORDER BY mixes directions. With DESC on priority the server
walks the index in claim order and locks only the rows it returns. (MySQL 8.0+ and MariaDB
10.8+ honour DESC key parts; older MariaDB builds the index ascending, still correct.)

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-27
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(
        "ix_task_claim",
        "task",
        ["status", sa.text("priority DESC"), "created_at", "task_id"],
    )


def downgrade() -> None:
    op.drop_index("ix_task_claim", table_name="task")
