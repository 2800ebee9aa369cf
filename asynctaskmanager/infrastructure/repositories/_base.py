"""What every SQL repository shares: statement execution with error translation, paging."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from contextlib import suppress
from datetime import datetime
from itertools import chain, islice
from typing import Any, Protocol, TypeVar

from sqlalchemy import Connection, Executable, NestedTransaction, Result, select
from sqlalchemy.exc import DBAPIError

from asynctaskmanager.domain import limits
from asynctaskmanager.domain import validation as check
from asynctaskmanager.errors import DuplicateError, NotFoundError, ValidationError
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
        *,
        savepoint: bool = True,
    ) -> int:
        """Insert ``items`` (entities of ``kind``) in batches of executemany: all or none.

        A key given twice, or one already stored, raises :class:`DuplicateError` naming it.
        Several rows go in under a SAVEPOINT, so that a failure leaves none of them in a
        transaction that the caller goes on with (SQLite keeps the rows of a batch before
        the failing one). ``savepoint=False`` saves its round trips for callers whose
        transaction ends with any failure (the queue): a failed call may leave rows behind.
        """
        iterator = iter(items)
        head = list(islice(iterator, 2))
        nested = self._begin_savepoint() if savepoint and len(head) > 1 else None
        try:
            total = self._insert_batches(chain(head, iterator), kind, values, statements)
        except _StoredKey as conflict:
            key = self._last_stored(conflict.statement, conflict.rows)
            if nested is not None:
                _quietly_roll_back(nested)
            raise DuplicateError(self.entity, key) from conflict.error
        except BaseException:
            if nested is not None:
                _quietly_roll_back(nested)
            raise
        if nested is not None:
            try:
                nested.commit()
            except DBAPIError as error:
                raise translate(error, self._profile, self.entity) from error
        return total

    def _begin_savepoint(self) -> NestedTransaction:
        try:
            return self._connection.begin_nested()
        except DBAPIError as error:
            raise translate(error, self._profile, self.entity) from error

    def _insert_batches(
        self,
        items: Iterable[S],
        kind: type[S],
        values: Callable[[S], tuple[Any, ...]],
        statements: tuple[PreparedInsert, PreparedInsert],
    ) -> int:
        batches: dict[PreparedInsert, list[tuple[Any, ...]]] = {
            statements[0]: [],
            statements[1]: [],
        }
        seen: set[Any] = set()
        total = 0
        for index, item in enumerate(items):
            entity(f"{self.entity}s[{index}]", item, kind)
            statement, row = _insert_of(item, values, statements)
            key = row[statement.key_index]
            if key in seen:
                raise DuplicateError(self.entity, key)
            seen.add(key)
            batch = batches[statement]
            batch.append(row)
            if len(batch) >= INSERT_BATCH:
                total += self._insert_batch(statement, batch)
                batch.clear()
        for statement, batch in batches.items():
            total += self._insert_batch(statement, batch)
        return total

    def _last_stored(self, statement: PreparedInsert, rows: list[tuple[Any, ...]]) -> Any:
        """A key of the failed batch ``rows`` that was stored before it (None if the lookup
        fails too).

        The last one the table holds: SQLite keeps only the rows before the failing one and
        a MySQL multi-row INSERT keeps none, so the last stored key is never one of the
        batch's own.
        """
        keys = [row[statement.key_index] for row in rows]
        column = statement.key_column
        try:
            stored = set(self._connection.execute(select(column).where(column.in_(keys))).scalars())
        except DBAPIError:
            return None
        return next((key for key in reversed(keys) if key in stored), None)

    def _insert_one(
        self,
        item: S,
        values: Callable[[S], tuple[Any, ...]],
        statements: tuple[PreparedInsert, PreparedInsert],
    ) -> None:
        statement, row = _insert_of(item, values, statements)
        self._insert_batch(statement, [row])

    def _insert_batch(self, statement: PreparedInsert, rows: list[tuple[Any, ...]]) -> int:
        if rows:
            try:
                statement.execute(self._connection, rows)
            except DBAPIError as error:
                key = rows[0][statement.key_index] if len(rows) == 1 else None
                translated = translate(error, self._profile, self.entity, key)
                if isinstance(translated, DuplicateError) and key is None:
                    raise _StoredKey(statement, rows, error) from error
                raise translated from error
        return len(rows)

    def _require_one(self, result: Result[Any], key: str) -> None:
        # rowcount counts matched rows on MySQL (the engine sets FOUND_ROWS) and on SQLite.
        if result.rowcount == 0:  # type: ignore[attr-defined]
            raise NotFoundError(self.entity, key)


class _StoredKey(Exception):
    """A batch of several rows met a stored key; the driver does not say which one."""

    def __init__(self, statement: PreparedInsert, rows: list[tuple[Any, ...]], error: DBAPIError):
        super().__init__("duplicate key in a batch")
        self.statement = statement
        self.rows = list(rows)
        self.error = error


def _quietly_roll_back(transaction: NestedTransaction | Connection) -> None:
    """Roll back; on a broken link the failure being raised matters more than this one."""
    with suppress(DBAPIError):
        transaction.rollback()


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
