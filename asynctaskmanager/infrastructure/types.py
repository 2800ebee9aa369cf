"""Column types and server defaults that behave the same on every backend."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from sqlalchemy import TIMESTAMP, Dialect
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.expression import FunctionElement
from sqlalchemy.types import TypeDecorator, TypeEngine

_UTC = timezone.utc

# SQLite's CURRENT_TIMESTAMP has this shape; storing bound values the same way keeps text
# comparisons against the database clock correct.
_SQLITE_STORAGE = "%(year)04d-%(month)02d-%(day)02d %(hour)02d:%(minute)02d:%(second)02d"


class _SQLiteTimestamp(sqlite.DATETIME):
    """SQLite's DATETIME processing, declared as TIMESTAMP like the other backends."""

    __visit_name__ = "TIMESTAMP"


# PostgreSQL's TIMESTAMP for the spec's: an instant (timestamptz), whole seconds like
# MySQL's TIMESTAMP.
# timestamptz at its default precision, not (0): PostgreSQL rounds a value to the column's
# precision, so a CURRENT_TIMESTAMP default in a (0) column can land up to half a second
# after the library's clock, which truncates (as MySQL stores). Values are truncated when
# bound and when read instead, so the API sees whole seconds as on every backend.
POSTGRES_TIMESTAMP = postgresql.TIMESTAMP(timezone=True)


class UTCDateTime(TypeDecorator[datetime]):
    """TIMESTAMP in UTC, whole seconds. Binds aware datetimes only; returns aware UTC.

    MySQL and SQLite store a wall-clock time: the connection's time zone is pinned to
    +00:00 (see the dialect profiles), so the naive values the drivers exchange are UTC on
    every server, whatever its own zone. PostgreSQL stores an instant (timestamptz): values
    travel with their offset both ways, so no session time zone can shift one.
    """

    impl = TIMESTAMP
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "sqlite":
            return dialect.type_descriptor(
                # No regexp: values are read with datetime.fromisoformat, in C.
                _SQLiteTimestamp(storage_format=_SQLITE_STORAGE)  # type: ignore[no-untyped-call]
            )
        if dialect.name == "postgresql":
            return dialect.type_descriptor(POSTGRES_TIMESTAMP)
        return dialect.type_descriptor(TIMESTAMP())

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError("naive datetime reached the database layer")
        instant = value.astimezone(_UTC).replace(microsecond=0)
        return instant if dialect.name == "postgresql" else instant.replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is not None:  # PostgreSQL's timestamptz, in the session's zone
            return value.astimezone(_UTC).replace(microsecond=0)
        return value.replace(tzinfo=_UTC)


class current_timestamp_on_update(FunctionElement[datetime]):
    """``CURRENT_TIMESTAMP ON UPDATE CURRENT_TIMESTAMP`` where the server has it.

    SQLite has no ON UPDATE clause; a trigger (created by the migrations) does the same there.
    """

    inherit_cache = True
    type = TIMESTAMP()


@compiles(current_timestamp_on_update)
def _compile_plain(element: current_timestamp_on_update, compiler: SQLCompiler, **kw: Any) -> str:
    return "CURRENT_TIMESTAMP"


@compiles(current_timestamp_on_update, "mysql")
@compiles(current_timestamp_on_update, "mariadb")
def _compile_mysql(element: current_timestamp_on_update, compiler: SQLCompiler, **kw: Any) -> str:
    return "CURRENT_TIMESTAMP ON UPDATE CURRENT_TIMESTAMP"
