"""One repository for any of the four tables: create, create_many, find, get, update, delete.

A table's repository names its table, its entity, and how the two map onto each other; what
differs between the tables is said in those named attributes, not in copies of the methods.
The four repositories add only their own queries.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from contextlib import suppress
from itertools import chain, islice
from typing import Any, ClassVar, Generic, TypeVar

from sqlalchemy import (
    Connection,
    Executable,
    NestedTransaction,
    Result,
    Select,
    Table,
    bindparam,
    delete,
    select,
    update,
)
from sqlalchemy.exc import DBAPIError

from asynctaskmanager.domain import limits
from asynctaskmanager.domain import validation as check
from asynctaskmanager.domain.models import restore
from asynctaskmanager.errors import DuplicateError, NotFoundError, ValidationError
from asynctaskmanager.infrastructure.dialects import DialectProfile
from asynctaskmanager.infrastructure.errors import translate
from asynctaskmanager.infrastructure.prepared import PreparedInsert

# Rows go to the driver in batches: a bulk enqueue of 100,000 tasks must not hold 100,000
# rows (and the driver's copy of them) in memory at once.
INSERT_BATCH = 1000

E = TypeVar("E")
K = TypeVar("K")


def reads(method: Callable[..., K]) -> Callable[..., K]:
    """Marks a repository method that only reads: called on ``storage.<repository>``, it runs
    in a read-only unit of work (on SQLite: one that neither waits for nor holds up a
    writer). Unmarked methods run as writers."""
    method.__dict__[READS] = True
    return method


READS = "asynctaskmanager_reads"


def only_reads(method: object) -> bool:
    return bool(getattr(method, READS, False))


class TableRepository(Generic[E]):
    """The shared create/find/get/update/delete of one table, inside the given connection.

    A subclass names:

    - ``entity``: the entity's name in errors (``"task_config"``), ``argument``: what an
      argument that should be one is called (``"config"``); ``kind``: the entity's class;
    - ``table`` and ``key``, the primary-key column, also the entity's attribute;
    - ``columns``: the columns an insert writes, in the order of :meth:`values`;
    - ``stamped``: the column the database fills in (CURRENT_TIMESTAMP) when the entity's
      attribute of that name is None; written like any other column otherwise;
    - ``database_owned``: columns an update never writes (the creation instant, and
      ``updated_at``, which the database keeps).
    """

    entity: ClassVar[str]
    argument: ClassVar[str]
    kind: ClassVar[type[Any]]
    table: ClassVar[Table]
    key: ClassVar[str]
    columns: ClassVar[tuple[str, ...]]
    stamped: ClassVar[str] = "created_at"
    database_owned: ClassVar[frozenset[str]] = frozenset({"created_at"})

    _inserts: ClassVar[tuple[PreparedInsert, PreparedInsert]]
    _find: ClassVar[Select[Any]]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # Built once per table: building a statement costs more than a primary-key lookup.
        cls._inserts = (
            PreparedInsert(cls.table, cls.columns),
            PreparedInsert(cls.table, (*cls.columns, cls.stamped)),
        )
        cls._find = select(cls.table).where(cls.table.c[cls.key] == bindparam("p_key"))

    def __init__(self, connection: Connection, profile: DialectProfile) -> None:
        self._connection = connection
        self._profile = profile

    # --- the mapping, per table ------------------------------------------------------------

    def values(self, item: E) -> tuple[Any, ...]:
        """The row of ``item`` in ``columns`` order."""
        raise NotImplementedError

    def from_row(self, row: Any) -> E:
        return restore(self.kind, dict(row._mapping))  # type: ignore[no-any-return]

    # --- the shared operations -------------------------------------------------------------

    def create(self, item: E) -> None:
        entity(self.argument, item, self.kind)
        statement, row = self._insert_of(item)
        self._insert_batch(statement, [row])

    def create_many(self, items: Iterable[E], *, savepoint: bool = True) -> int:
        """Insert all or none, in batches of executemany; returns how many were inserted.

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
            total = self._insert_batches(chain(head, iterator))
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

    @reads
    def find(self, key: str) -> E | None:
        check.identifier(self.key, key)
        row = self._execute(self._find, {"p_key": key}).first()
        return None if row is None else self.from_row(row)

    @reads
    def get(self, key: str) -> E:
        found = self.find(key)
        if found is None:
            raise NotFoundError(self.entity, key)
        return found

    def update(self, item: E) -> None:
        """Writes every field but the key and the database's own columns."""
        entity(self.argument, item, self.kind)
        key = getattr(item, self.key)
        row = {
            column: value
            for column, value in zip(self.columns, self.values(item), strict=True)
            if column != self.key and column not in self.database_owned
        }
        stamp = getattr(item, self.stamped)
        if stamp is not None and self.stamped not in self.database_owned:
            row[self.stamped] = stamp
        table = self.table
        result = self._execute(update(table).where(table.c[self.key] == key).values(row), key=key)
        self._require_one(result, key)

    def delete(self, key: str) -> None:
        check.identifier(self.key, key)
        table = self.table
        self._require_one(self._execute(delete(table).where(table.c[self.key] == key)), key)

    # --- helpers -------------------------------------------------------------------------

    def _execute(
        self, statement: Executable, params: Any = None, *, key: str | None = None
    ) -> Result[Any]:
        try:
            return self._connection.execute(statement, params)
        except DBAPIError as error:
            raise translate(error, self._profile, self.entity, key) from error

    def _insert_of(self, item: E) -> tuple[PreparedInsert, tuple[Any, ...]]:
        """The statement and row for ``item``: the stamped column is left to the database
        when the entity has no value for it."""
        stamp = getattr(item, self.stamped)
        if stamp is None:
            return self._inserts[0], self.values(item)
        return self._inserts[1], (*self.values(item), stamp)

    def _begin_savepoint(self) -> NestedTransaction:
        try:
            return self._connection.begin_nested()
        except DBAPIError as error:
            raise translate(error, self._profile, self.entity) from error

    def _insert_batches(self, items: Iterable[E]) -> int:
        batches: dict[PreparedInsert, list[tuple[Any, ...]]] = {
            self._inserts[0]: [],
            self._inserts[1]: [],
        }
        seen: set[Any] = set()
        total = 0
        for index, item in enumerate(items):
            entity(f"{self.entity}s[{index}]", item, self.kind)
            statement, row = self._insert_of(item)
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

    def _insert_batch(self, statement: PreparedInsert, rows: list[tuple[Any, ...]]) -> int:
        if rows:
            try:
                statement.execute(self._connection, rows)
            except DBAPIError as error:
                key = rows[0][statement.key_index] if len(rows) == 1 else None
                translated = translate(error, self._profile, self.entity, key)
                if isinstance(translated, DuplicateError) and translated.key is None:
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
