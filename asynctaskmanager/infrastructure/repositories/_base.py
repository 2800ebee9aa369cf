"""What every SQL repository shares: statement execution with error translation, paging."""

from __future__ import annotations

from typing import Any, TypeVar

from sqlalchemy import Connection, Executable, Result
from sqlalchemy.exc import DBAPIError

from asynctaskmanager.domain import limits
from asynctaskmanager.domain import validation as check
from asynctaskmanager.errors import NotFoundError, ValidationError
from asynctaskmanager.infrastructure.dialects import DialectProfile, translate


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

    def _require_one(self, result: Result[Any], key: str) -> None:
        # rowcount counts matched rows on MySQL (the engine sets FOUND_ROWS) and on SQLite.
        if result.rowcount == 0:  # type: ignore[attr-defined]
            raise NotFoundError(self.entity, key)


E = TypeVar("E")


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
