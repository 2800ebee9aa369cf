"""Add task_config.claim_seq: a counter that every claim on a cluster moves.

Why: on a MariaDB Galera cluster row locks are node-local. The claim's max_concurrent check
(count the type's running tasks under its config row's lock, just before COMMIT) is exact on
one server, but two claims on two nodes both take the lock, both count the same free slot,
and both commit. A write to the type's config row makes the two claims' write sets overlap,
so certification lets only the first commit and rolls the other back (1213); rerun, it sees
the first. The column holds nothing else: its value only counts claims since it was added.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-03
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | Sequence[str] | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "task_config",
        sa.Column("claim_seq", sa.BigInteger, nullable=False, server_default=sa.text("0")),
    )


def downgrade() -> None:
    # A plain DROP COLUMN (SQLite 3.35+, MySQL, MariaDB): a batch rebuild of the table on
    # SQLite would rewrite its DDL, and the downgrade would not be the upgrade's inverse.
    op.execute("ALTER TABLE task_config DROP COLUMN claim_seq")
