"""The SQLAlchemy 2.x declarative mapping of the four tables.

It mirrors the spec's DDL column for column. The deviations, each made by a migration with
its reason, are listed in the README: table-scoped index names, a binary collation on keys,
and the claim index. Nothing here blocks the monthly RANGE partitioning of ``task`` on
``created_at``: no foreign keys, no unique key other than the primary key, and every
``task`` index may be made partition-local.

Alembic owns the schema: this module is the model Alembic compares against, never a
``create_all`` source.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any, cast

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Index,
    Integer,
    MetaData,
    Numeric,
    String,
    Table,
    Text,
    text,
)
from sqlalchemy.dialects import mysql, postgresql
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeEngine

from asynctaskmanager.infrastructure.types import UTCDateTime, current_timestamp_on_update

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_N_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

MYSQL_TABLE_ARGS = {"mysql_engine": "InnoDB", "mysql_charset": "utf8mb4"}

# Keys compare byte for byte on MySQL as they do on SQLite: 'Task-1' and 'task-1' are two keys.
KEY_COLLATION = "utf8mb4_bin"
# PostgreSQL's deterministic collations already make = byte-exact; "C" also orders keys by
# bytes (the claim's task_id tie-break, listings) whatever the database's locale, as on the
# other backends.
POSTGRES_KEY_COLLATION = "C"


def key_type(length: int = 64) -> TypeEngine[str]:
    return (
        String(length)
        .with_variant(mysql.VARCHAR(length, collation=KEY_COLLATION), "mysql", "mariadb")
        .with_variant(postgresql.VARCHAR(length, collation=POSTGRES_KEY_COLLATION), "postgresql")
    )


def json_type() -> TypeEngine[Any]:
    # none_as_null: Python None is SQL NULL (so IS NULL finds it), not the JSON text 'null'.
    # JSONB on PostgreSQL: parsed once on write, compact, comparable and indexable.
    return JSON(none_as_null=True).with_variant(postgresql.JSONB(none_as_null=True), "postgresql")


NOW = text("CURRENT_TIMESTAMP")


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class TaskRow(Base):
    __tablename__ = "task"

    task_id: Mapped[str] = mapped_column(key_type(), primary_key=True)
    task_type: Mapped[str] = mapped_column(key_type())
    priority: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    status: Mapped[str] = mapped_column(String(32))
    payload: Mapped[Any | None] = mapped_column(json_type())
    result: Mapped[Any | None] = mapped_column(json_type())
    error_message: Mapped[str | None] = mapped_column(Text)
    worker_id: Mapped[str | None] = mapped_column(key_type())
    retry_count: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    max_retry: Mapped[int] = mapped_column(Integer, server_default=text("3"))
    timeout: Mapped[int] = mapped_column(Integer, server_default=text("30"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, server_default=NOW)
    scheduled_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    __table_args__ = (
        Index(None, "status"),
        Index(None, "task_type"),
        Index(None, "worker_id"),
        Index(None, "created_at"),
        MYSQL_TABLE_ARGS,
    )


# Serves the claim query without a filesort: equality on status, then the claim order.
# DESC on priority matters: MySQL will not scan an all-ascending index for a mixed-direction
# ORDER BY. task_id breaks ties inside one second (library ids are time-ordered).
Index(
    "ix_task_claim",
    TaskRow.status,
    TaskRow.priority.desc(),
    TaskRow.created_at,
    TaskRow.task_id,
)


class TaskConfigRow(Base):
    __tablename__ = "task_config"

    task_type: Mapped[str] = mapped_column(key_type(), primary_key=True)
    task_name: Mapped[str] = mapped_column(String(128))
    description: Mapped[str | None] = mapped_column(Text)
    executor_type: Mapped[str] = mapped_column(String(32))
    executor_config: Mapped[Any | None] = mapped_column(json_type())
    default_timeout: Mapped[int] = mapped_column(Integer, server_default=text("30"))
    default_max_retry: Mapped[int] = mapped_column(Integer, server_default=text("3"))
    retry_strategy: Mapped[str] = mapped_column(String(32))
    retry_delay: Mapped[int] = mapped_column(Integer, server_default=text("5"))
    backoff_rate: Mapped[Decimal] = mapped_column(Numeric(10, 2), server_default="2.00")
    max_concurrent: Mapped[int] = mapped_column(Integer, server_default=text("10"))
    enabled: Mapped[bool] = mapped_column(Boolean, server_default="1")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, server_default=NOW)
    updated_at: Mapped[datetime] = mapped_column(
        UTCDateTime, server_default=current_timestamp_on_update()
    )
    # Moved by every claim on a cluster (revision 0006), so that certification serialises
    # the claimers of a type on different nodes; see queue/claim.py.
    claim_seq: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))

    __table_args__ = (Index(None, "enabled"), MYSQL_TABLE_ARGS)


class TaskLogRow(Base):
    __tablename__ = "task_log"

    log_id: Mapped[str] = mapped_column(key_type(), primary_key=True)
    task_id: Mapped[str] = mapped_column(key_type())
    log_type: Mapped[str] = mapped_column(String(32))
    from_status: Mapped[str | None] = mapped_column(String(32))
    to_status: Mapped[str | None] = mapped_column(String(32))
    message: Mapped[str | None] = mapped_column(Text)
    details: Mapped[Any | None] = mapped_column(json_type())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, server_default=NOW)

    __table_args__ = (
        Index(None, "task_id"),
        Index(None, "log_type"),
        Index(None, "created_at"),
        MYSQL_TABLE_ARGS,
    )


class WorkerRow(Base):
    __tablename__ = "worker"

    worker_id: Mapped[str] = mapped_column(key_type(), primary_key=True)
    worker_name: Mapped[str] = mapped_column(String(128))
    address: Mapped[str] = mapped_column(String(256))
    status: Mapped[str] = mapped_column(String(32))
    capacity: Mapped[int] = mapped_column(Integer, server_default=text("10"))
    current_load: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    supported_types: Mapped[Any | None] = mapped_column(json_type())
    last_heartbeat: Mapped[datetime] = mapped_column(UTCDateTime, server_default=NOW)

    __table_args__ = (Index(None, "status"), Index(None, "last_heartbeat"), MYSQL_TABLE_ARGS)


# The Core tables behind the mapping, for the Core statements the repositories issue.
task_table = cast(Table, TaskRow.__table__)
task_config_table = cast(Table, TaskConfigRow.__table__)
task_log_table = cast(Table, TaskLogRow.__table__)
worker_table = cast(Table, WorkerRow.__table__)


class LeaseRow(Base):
    """A named lock that expires by the database's clock (revision 0005): cluster-safe,
    unlike GET_LOCK, which is node-local on Galera."""

    __tablename__ = "lease"

    name: Mapped[str] = mapped_column(key_type(), primary_key=True)
    holder: Mapped[str] = mapped_column(key_type())
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)

    __table_args__ = (MYSQL_TABLE_ARGS,)


lease_table = cast(Table, LeaseRow.__table__)
