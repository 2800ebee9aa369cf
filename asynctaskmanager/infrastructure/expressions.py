"""SQL expressions that render differently per dialect, for the queue and retention."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, func
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.functions import FunctionElement

from asynctaskmanager.infrastructure.types import UTCDateTime


def db_now() -> ColumnElement[datetime]:
    """The database's clock, in UTC (connections are pinned to +00:00)."""
    return func.current_timestamp(type_=UTCDateTime()).label("db_now")


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
