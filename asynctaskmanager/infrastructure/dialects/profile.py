"""The shape of a dialect profile, shared by every dialect module."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import URL, Engine
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DBAPIError

# A Connection execution option: this unit of work only reads (see dialects.sqlite).
READ_ONLY = "asynctaskmanager_read_only"


@dataclass(frozen=True)
class ErrorKind:
    """What a driver error means. ``key``: the duplicate key, where the driver names it."""

    duplicate: bool = False
    transient: bool = False
    bad_value: bool = False
    key: str | None = None


@dataclass(frozen=True)
class DialectProfile:
    """One backend's differences.

    ``single_writer``: one writer at a time (SQLite): a thread may not open a unit of work
    inside its own. ``serialise_writers``: every unit of work shares one connection (SQLite
    in memory), so the storage holds a lock around each. ``ephemeral``: the database lives
    and dies with its engine, so a storage migrates it when it opens.
    """

    name: str
    engine_options: Callable[[URL], dict[str, Any]]
    configure: Callable[[Engine], None]
    classify: Callable[[DBAPIError], ErrorKind]
    supports_skip_locked: Callable[[Dialect], bool]
    single_writer: bool = False
    serialise_writers: bool = False
    ephemeral: bool = False
    driver_hint: str = ""
