"""Bulk inserts as rows of tuples: compiled once per dialect, sent with the driver's executemany.

``connection.execute(insert(table), [dict, ...])`` builds a parameter dict per row and then
the driver's tuple from it; on a bulk enqueue that bookkeeping cost about as much as the
database's own work (see bench/). Here SQLAlchemy still compiles the statement and supplies
each column's bind processing (JSON encoding, UTC timestamps), and the rows reach
``exec_driver_sql`` as tuples: errors, transactions and invalidation on a lost connection
stay SQLAlchemy's.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any
from weakref import WeakKeyDictionary

from sqlalchemy import Column, Connection, Dialect, Table, insert

from asynctaskmanager.infrastructure.types import UTCDateTime

_Processor = Callable[[Any], Any]


class PreparedInsert:
    """``INSERT INTO table (columns...) VALUES (...)``; rows are tuples in ``columns`` order."""

    def __init__(self, table: Table, columns: Sequence[str]) -> None:
        self._table = table
        self.columns = tuple(columns)
        (self.key_column,) = table.primary_key.columns
        self.key_index = self.columns.index(self.key_column.name)
        # Per dialect object: the bind processors take its JSON serializer, and an engine
        # that goes away takes its entry with it.
        self._compiled: WeakKeyDictionary[Dialect, _Compiled] = WeakKeyDictionary()

    def execute(self, connection: Connection, rows: list[tuple[Any, ...]]) -> None:
        compiled = self._for(connection.dialect)
        connection.exec_driver_sql(compiled.sql, compiled.parameters(rows))

    def _for(self, dialect: Dialect) -> _Compiled:
        found = self._compiled.get(dialect)
        if found is None:
            found = self._compiled[dialect] = _Compiled(self._table, self.columns, dialect)
        return found


class _Compiled:
    """The driver's SQL for one dialect, and how a row becomes its parameters: SQLAlchemy
    orders an INSERT's columns as the table does, and each column may process its value."""

    def __init__(self, table: Table, columns: tuple[str, ...], dialect: Dialect) -> None:
        compiled = insert(table).compile(
            dialect=dialect if dialect.positional else _positional_twin(dialect),
            column_keys=list(columns),
        )
        order = list(compiled.positiontup or ())
        if not compiled.positional or sorted(order) != sorted(columns):
            raise RuntimeError(f"{dialect.name}: no positional INSERT of {columns}")
        self.sql = compiled.string
        self._take = [columns.index(name) for name in order]
        self._process: list[tuple[int, _Processor, bool]] = []
        for position, name in enumerate(order):
            column: Column[Any] = table.c[name]
            processor = column.type.dialect_impl(dialect).bind_processor(dialect)
            if processor is not None:
                # The rows of a batch mostly share their timestamps (one database clock
                # reading): a timestamp like the last one reuses its processed value.
                repeats = isinstance(column.type, UTCDateTime)
                self._process.append((position, processor, repeats))

    def parameters(self, rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
        take, process = self._take, self._process
        last: dict[int, tuple[Any, Any]] = {}
        out = []
        for row in rows:
            values = [row[index] for index in take]
            for position, processor, repeats in process:
                value = values[position]
                if value is None:  # NULL stays NULL: JSON None is SQL NULL, never 'null'
                    continue
                if repeats:
                    seen = last.get(position)
                    if seen is not None and seen[0] == value:
                        values[position] = seen[1]
                        continue
                    last[position] = (value, processor(value))
                    values[position] = last[position][1]
                else:
                    values[position] = processor(value)
            out.append(tuple(values))
        return out


def _positional_twin(dialect: Dialect) -> Dialect:
    """The same dialect with the driver's positional style (psycopg: %s for %(name)s), to
    compile with only: the bind processing stays the real dialect's."""
    dialect_class: Any = type(dialect)  # a DefaultDialect subclass, whose __init__ takes it
    twin: Dialect = dialect_class(paramstyle="format")
    twin.server_version_info = dialect.server_version_info
    return twin
