"""Add the lease table: named, expiring locks by the database's clock.

Why: one worker at a time runs the sweep. ``GET_LOCK()`` is node-local on a Galera cluster
(two nodes held the same named lock at once), while an UPDATE of one row is certified
cluster-wide, so the lock is a row: ``name`` is taken by ``holder`` until ``expires_at``.
A holder renews it before it expires; anyone may take it once it has.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql, postgresql

revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Names and holders (worker ids) compare byte for byte, as every key does (revision 0003).
KEY = (
    sa.String(64)
    .with_variant(mysql.VARCHAR(64, collation="utf8mb4_bin"), "mysql", "mariadb")
    .with_variant(sa.String(64, collation="C"), "postgresql")
)
# PostgreSQL stores instants (timestamptz, as revision 0001 makes every TIMESTAMP there).
INSTANT = sa.TIMESTAMP().with_variant(postgresql.TIMESTAMP(timezone=True), "postgresql")


def upgrade() -> None:
    op.create_table(
        "lease",
        sa.Column("name", KEY, primary_key=True),
        sa.Column("holder", KEY, nullable=False),
        sa.Column("expires_at", INSTANT, nullable=False),
        mysql_engine="InnoDB",
        mysql_charset="utf8mb4",
    )


def downgrade() -> None:
    op.drop_table("lease")
