"""What every SQL repository shares: statement execution with error translation, paging."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any, Protocol, TypeVar

from sqlalchemy import Connection, Executable, Result
from sqlalchemy.exc import DBAPIError

from asynctaskmanager.domain import limits
from asynctaskmanager.domain import validation as check
from asynctaskmanager.errors import NotFoundError, ValidationError
from asynctaskmanager.infrastructure.dialects import DialectProfile, translate
from asynctaskmanager.infrastructure.prepared import PreparedInsert

# Rows go to the driver in batches: a bulk enqueue of 100,000 tasks must not hold 100,000
# rows (and the driver's copy of them) in memory at once.
INSERT_BATCH = 1000


class _Stamped(Protocol):
    @property
    def created_at(self) -> datetime | None: ...


E = TypeVar("E")
S = TypeVar("S", bound=_Stamped)


class SqlRepository:
    entity = "record"

    def __init__(self, connection: Connection, profile: DialectProfile) -> None:
        self._connection = connection
        self._profile = profile

    def _execute(
        self, statement: Executable, params: Any = None, *, key: str | None = None
    ) -> Result[Any]:
        try:
            return self._connection.execute(statement, params)
        except DBAPIError as error:
            raise translate(error, self._profile, self.entity, key) from error

    def _insert_all(
        self,
        items: Iterable[S],
        kind: type[S],
        values: Callable[[S], tuple[Any, ...]],
        statements: tuple[PreparedInsert, PreparedInsert],
    ) -> int:
        """Insert ``items`` (entities of ``kind``) in batches of executemany.

        ``statements``: the INSERT without created_at (the database fills it in) and the one
        with it, appended to ``values``; executemany needs one column set per statement.
        """
        batches: dict[PreparedInsert, list[tuple[Any, ...]]] = {
            statements[0]: [],
            statements[1]: [],
        }
        total = 0
        for index, item in enumerate(items):
            entity(f"{self.entity}s[{index}]", item, kind)
            statement, row = _insert_of(item, values, statements)
            batch = batches[statement]
            batch.append(row)
            if len(batch) >= INSERT_BATCH:
                total += self._insert_batch(statement, batch)
                batch.clear()
        for statement, batch in batches.items():
            total += self._insert_batch(statement, batch)
        return total

    def _insert_one(
        self,
        item: S,
        values: Callable[[S], tuple[Any, ...]],
        statements: tuple[PreparedInsert, PreparedInsert],
        key: str,
    ) -> None:
        statement, row = _insert_of(item, values, statements)
        self._insert_batch(statement, [row], key)

    def _insert_batch(
        self, statement: PreparedInsert, rows: list[tuple[Any, ...]], key: str | None = None
    ) -> int:
        if rows:
            try:
                statement.execute(self._connection, rows)
            except DBAPIError as error:
                raise translate(error, self._profile, self.entity, key) from error
        return len(rows)

    def _require_one(self, result: Result[Any], key: str) -> None:
        # rowcount counts matched rows on MySQL (the engine sets FOUND_ROWS) and on SQLite.
        if result.rowcount == 0:  # type: ignore[attr-defined]
            raise NotFoundError(self.entity, key)


def _insert_of(
    item: S,
    values: Callable[[S], tuple[Any, ...]],
    statements: tuple[PreparedInsert, PreparedInsert],
) -> tuple[PreparedInsert, tuple[Any, ...]]:
    """The statement and row for ``item``: created_at is left to the database when None."""
    if item.created_at is None:
        return statements[0], values(item)
    return statements[1], (*values(item), item.created_at)


def entity(field: str, value: object, kind: type[E]) -> E:
    """The repositories take the domain's entities, built (and so validated) by the caller."""
    if not isinstance(value, kind):
        raise ValidationError(field, f"must be a {kind.__name__}", value)
    return value


def page(limit: object, offset: object) -> tuple[int, int]:
    return (
        check.integer("limit", limit, 1, limits.PAGE_MAX),
        check.integer("offset", offset, 0),
    )
