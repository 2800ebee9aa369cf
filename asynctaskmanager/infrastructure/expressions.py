"""SQL expressions that render differently per dialect, for the queue and retention."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, UnaryExpression, nulls_first, nulls_last
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql import operators
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.functions import FunctionElement

from asynctaskmanager.infrastructure.types import UTCDateTime


class database_clock(FunctionElement[datetime]):
    """The database's clock at the start of the statement, in whole seconds.

    ``CURRENT_TIMESTAMP`` on MySQL and SQLite, which is that. PostgreSQL's CURRENT_TIMESTAMP
    is the start of the transaction instead: a claim that waited on locks would start its
    attempt in the past and time out early, so it reads statement_timestamp() there.
    """

    inherit_cache = True
    type = UTCDateTime()


@compiles(database_clock)
def _clock_plain(element: database_clock, compiler: SQLCompiler, **kw: Any) -> str:
    return "CURRENT_TIMESTAMP"


@compiles(database_clock, "postgresql")
def _clock_postgresql(element: database_clock, compiler: SQLCompiler, **kw: Any) -> str:
    return "date_trunc('second', statement_timestamp())"


def db_now() -> ColumnElement[datetime]:
    """The database's clock (see :class:`database_clock`), read as an aware UTC datetime."""
    return database_clock().label("db_now")


class filter_only(FunctionElement[Any]):
    """A column compared as a filter only: SQLite must not choose an index for it.

    Rendered ``+column`` on SQLite (unary plus: a no-op that disqualifies the term from index
    use), the plain column elsewhere. Without statistics, SQLite answers ``task_id IN (a, b)
    AND status = 'pending'`` by scanning every pending row of ix_task_claim instead of two
    primary-key lookups; a claim of 10 then costs more per task than 10 claims of 1.
    """

    inherit_cache = True

    def __init__(self, column: ColumnElement[Any]) -> None:
        super().__init__(column)
        self.type = column.type


@compiles(filter_only)
def _filter_only_plain(element: filter_only, compiler: SQLCompiler, **kw: Any) -> str:
    return compiler.process(element.clauses, **kw)


@compiles(filter_only, "sqlite")
def _filter_only_sqlite(element: filter_only, compiler: SQLCompiler, **kw: Any) -> str:
    return "+" + compiler.process(element.clauses, **kw)


class nulls_low(FunctionElement[Any]):
    """An ORDER BY term (``column.asc()`` or ``.desc()``) in which NULL sorts below every
    value, as MySQL and SQLite sort it.

    PostgreSQL sorts NULL above every value unless told: NULLS FIRST or NULLS LAST there.
    MySQL has no such clause, so the plain term renders elsewhere.
    """

    inherit_cache = True

    def __init__(self, term: UnaryExpression[Any]) -> None:
        super().__init__(term)


@compiles(nulls_low)
def _nulls_low_plain(element: nulls_low, compiler: SQLCompiler, **kw: Any) -> str:
    return compiler.process(element.clauses, **kw)


@compiles(nulls_low, "postgresql")
def _nulls_low_postgresql(element: nulls_low, compiler: SQLCompiler, **kw: Any) -> str:
    (term,) = element.clauses.clauses
    assert isinstance(term, UnaryExpression)
    placed = nulls_last(term) if term.modifier is operators.desc_op else nulls_first(term)
    return compiler.process(placed, **kw)
