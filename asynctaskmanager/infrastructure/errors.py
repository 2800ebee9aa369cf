"""Driver errors translated into the library's own, in one place.

The dialect profile says what kind of failure a driver error is; this module turns that into
an :class:`~asynctaskmanager.errors.AsyncTaskManagerError`, which callers raise ``from`` the
original.
"""

from __future__ import annotations

import re

from sqlalchemy.exc import DBAPIError

from asynctaskmanager.errors import (
    AsyncTaskManagerError,
    DuplicateError,
    StorageError,
    TransientStorageError,
    ValidationError,
)
from asynctaskmanager.infrastructure.dialects import DialectProfile


def translate(
    error: DBAPIError,
    profile: DialectProfile,
    entity: str = "record",
    key: str | None = None,
) -> AsyncTaskManagerError:
    """The library error for a driver error. Callers raise it ``from`` the original."""
    kind = profile.classify(error)
    detail = str(error.orig).strip() or type(error.orig).__name__
    if kind.transient:
        return TransientStorageError(f"transient database failure, safe to retry: {detail}")
    if kind.duplicate:
        return DuplicateError(entity, key if key is not None else kind.key)
    if kind.bad_value:
        return ValidationError(_refused_field(detail, entity), "refused by the database", detail)
    return StorageError(f"database error: {detail}")


# Where the drivers name the column of a refused value: MySQL's "Column 'x' cannot be null",
# "... for column 'x'", "... for column `db`.`t`.`x`", "CONSTRAINT `t.x` failed"; SQLite's
# "NOT NULL constraint failed: t.x"; PostgreSQL's 'null value in column "x" of relation'.
_REFUSED_FIELD = (
    re.compile(r"column '([^']+)'", re.IGNORECASE),
    re.compile(r'column "([^"]+)"'),
    re.compile(r"column ((?:`[^`]+`\.?)+)", re.IGNORECASE),
    re.compile(r"CONSTRAINT `([^`]+)` failed"),
    re.compile(r"constraint failed: ([\w.]+)"),
)


def _refused_field(detail: str, entity: str) -> str:
    for pattern in _REFUSED_FIELD:
        match = pattern.search(detail)
        if match:
            return match.group(1).replace("`", "").rsplit(".", 1)[-1]
    return entity


def pool_exhausted() -> TransientStorageError:
    """Every pooled connection stayed busy for the pool timeout (30 s). Nothing was sent, so
    the caller may retry; the runner does not, as it has already waited that long."""
    return TransientStorageError(
        "no free database connection within the pool timeout (raise max_open?)"
    )
