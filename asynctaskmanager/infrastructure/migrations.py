"""Run the Alembic migrations from code, from a checkout or from an installed wheel; check a
database's schema when it is opened; and say in a line what to do when a database cannot be
reached or migrated.

Every function here raises only library errors: Alembic's and SQLAlchemy's are translated,
with the original chained.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.script.revision import RevisionError
from alembic.util.exc import CommandError
from sqlalchemy import URL, Connection, Engine, inspect
from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from sqlalchemy.pool import StaticPool

from asynctaskmanager.errors import (
    AsyncTaskManagerError,
    ConfigurationError,
    SchemaOutOfDateError,
    StorageError,
    TransientStorageError,
)

_PACKAGE = Path(__file__).resolve().parent.parent

# Set to 1 to open a database whose schema differs from the library's (a rolling upgrade:
# old and new processes side by side while the migration runs). Same as check_schema=False.
SKIP_SCHEMA_CHECK_ENV = "ASYNCTASK_SKIP_SCHEMA_CHECK"
VERSION_TABLE = "alembic_version"
LIBRARY_TABLES = frozenset({"task", "task_config", "task_log", "worker"})
FIRST_REVISION = "0001"

# MySQL/MariaDB client and server error codes (the same from mysqlclient and PyMySQL).
_ACCESS_DENIED = {1044, 1045, 1698}
_UNKNOWN_DATABASE = {1049}
_CANNOT_CONNECT = {2002, 2003, 2006, 2013}
_UNKNOWN_HOST = {2005}


def script_location() -> Path:
    """The wheel carries the migrations inside the package; a checkout has them at the top."""
    for candidate in (_PACKAGE / "_migrations", _PACKAGE.parent / "migrations"):
        if (candidate / "env.py").is_file():
            return candidate
    raise ConfigurationError("the asynctaskmanager migrations are missing from this installation")


def alembic_config(connection: Connection | None = None, url: URL | str | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(script_location()))
    if url is not None:
        rendered = url.render_as_string(hide_password=False) if isinstance(url, URL) else url
        config.set_main_option("sqlalchemy.url", rendered.replace("%", "%%"))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Migrate to ``revision``. A spec-DDL database (tables, no revision) is refused before
    anything is written, with the stamp it needs."""
    with library_errors(engine):
        _refuse_unstamped(engine)
        with engine.begin() as connection:
            command.upgrade(alembic_config(connection), revision)


def downgrade(engine: Engine, revision: str) -> None:
    with library_errors(engine), engine.begin() as connection:
        command.downgrade(alembic_config(connection), revision)


def stamp(engine: Engine, revision: str) -> None:
    with library_errors(engine), engine.begin() as connection:
        command.stamp(alembic_config(connection), revision)


def head_revision() -> str | None:
    with library_errors():
        return _script().get_current_head()


def current_revision(engine: Engine) -> str | None:
    with library_errors(engine), engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


@dataclass(frozen=True)
class Revision:
    revision: str
    down_revision: str | None
    doc: str


def history() -> list[Revision]:
    """Every revision, oldest first."""
    with library_errors():
        walked = list(_script().walk_revisions())
    return [
        Revision(r.revision, _single(r.down_revision), (r.doc or "").strip())
        for r in reversed(walked)
    ]


def is_known(revision: str) -> bool:
    return any(known.revision == revision for known in history())


# --- the check made when a storage is opened ------------------------------------------------


def check_on_open(engine: Engine, *, upgrading: bool, enabled: bool = True) -> None:
    """Refuse a database the library would misuse: a schema behind (or ahead of) the
    library's head, or the spec's tables with no revision recorded.

    An empty database passes (it is migrated next, by ``upgrade`` or the caller). With
    ``upgrading`` only the unstamped case is refused, before the migration would fail on it.
    Off with ``enabled=False`` or ``ASYNCTASK_SKIP_SCHEMA_CHECK=1``, for rolling upgrades.
    """
    if not enabled or os.environ.get(SKIP_SCHEMA_CHECK_ENV, "") in ("1", "true", "yes"):
        return
    if isinstance(engine.pool, StaticPool):  # the memory backend is migrated as it opens
        return
    try:
        _check(engine, upgrading=upgrading)
    finally:
        # The pool is left as it was before the check: empty. Listeners a caller adds to
        # the engine after opening (a "connect" hook) then see every connection.
        engine.dispose()


def _check(engine: Engine, *, upgrading: bool) -> None:
    with library_errors(engine):
        if upgrading:
            _refuse_unstamped(engine)
            return
        state = _schema_state(engine)
        if state.unstamped:
            raise _unstamped_error(engine)
        head = head_revision()
        if state.revision is None or state.revision == head:
            return
        command_line = f"asynctaskmanager upgrade --url {display_url(engine.url)}"
        if is_known(state.revision):
            raise SchemaOutOfDateError(
                state.revision,
                head,
                f"the database schema is at revision {state.revision}, this library needs "
                f"{head}: run '{command_line}' (during a rolling upgrade: "
                f"{SKIP_SCHEMA_CHECK_ENV}=1 or check_schema=False)",
            )
        raise SchemaOutOfDateError(
            state.revision,
            head,
            f"the database schema is at revision {state.revision}, unknown to this library "
            f"(head {head}): upgrade the asynctaskmanager package (during a rolling upgrade: "
            f"{SKIP_SCHEMA_CHECK_ENV}=1 or check_schema=False)",
        )


@dataclass(frozen=True)
class _SchemaState:
    revision: str | None
    unstamped: bool


def _schema_state(engine: Engine) -> _SchemaState:
    with engine.connect() as connection:
        tables = set(inspect(connection).get_table_names())
        revision = (
            MigrationContext.configure(connection).get_current_revision()
            if VERSION_TABLE in tables
            else None
        )
    # An empty alembic_version beside the tables is what a failed adoption used to leave.
    return _SchemaState(revision, revision is None and bool(tables & LIBRARY_TABLES))


def _refuse_unstamped(engine: Engine) -> None:
    if _schema_state(engine).unstamped:
        raise _unstamped_error(engine)


def _unstamped_error(engine: Engine) -> SchemaOutOfDateError:
    url = display_url(engine.url)
    return SchemaOutOfDateError(
        None,
        head_revision(),
        "the database has the task tables but no schema revision (made from the spec's DDL?): "
        f"run 'asynctaskmanager stamp {FIRST_REVISION} --url {url}', then "
        f"'asynctaskmanager upgrade --url {url}'",
    )


# --- errors ---------------------------------------------------------------------------------


def display_url(url: URL) -> str:
    return url.render_as_string(hide_password=True)


@contextmanager
def library_errors(where: Engine | URL | None = None) -> Iterator[None]:
    """Alembic's and SQLAlchemy's errors as library errors that say what to do; ``where``
    (an engine or its URL) names the database in the words."""
    url = where.url if isinstance(where, Engine) else where
    try:
        yield
    except AsyncTaskManagerError as error:
        # The repositories' translation keeps the driver's words; a refused connection says
        # better what to do.
        cause = error.__cause__
        if isinstance(cause, DBAPIError):
            hint = connection_failure(url, cause)
            if hint is not None:
                raise hint from error
        raise
    except (CommandError, RevisionError) as error:
        raise StorageError(
            f"{_first_line(error)}: run 'asynctaskmanager history' to list the revisions"
        ) from error
    except DBAPIError as error:
        hint = connection_failure(url, error)
        if hint is not None:
            raise hint from error
        raise StorageError(f"database error: {_first_line(error.orig or error)}") from error
    except SQLAlchemyError as error:
        raise StorageError(f"database error: {_first_line(error)}") from error


def connection_failure(url: URL | None, error: BaseException) -> StorageError | None:
    """The library error for a database that cannot be reached or entered, with what to do;
    None when ``error`` is not one of those."""
    original = error.orig if isinstance(error, DBAPIError) else error
    args = getattr(original, "args", ())
    code = args[0] if args and isinstance(args[0], int) else None
    where = display_url(url) if url is not None else "the database"
    host = f"{url.host or 'localhost'}:{url.port or 3306}" if url is not None else "the server"
    database = url.database if url is not None else None
    if code in _ACCESS_DENIED:
        user = url.username if url is not None else None
        return StorageError(
            f"access denied for user {user!r} on {host}: check the user and password in --url "
            "(or ASYNCTASK_DATABASE_URL)"
        )
    if code in _UNKNOWN_DATABASE:
        return StorageError(
            f"database {database!r} does not exist on {host}: create it "
            f"(CREATE DATABASE {database} CHARACTER SET utf8mb4) or fix the name in --url"
        )
    if code in _CANNOT_CONNECT:
        return TransientStorageError(
            f"cannot connect to {host}: is the server running and listening there? "
            "Check the host and port in --url"
        )
    if code in _UNKNOWN_HOST:
        return StorageError(f"unknown host in {where}: fix the host in --url")
    if "unable to open database file" in str(original):
        return StorageError(
            f"cannot open the SQLite file of {where}: check the path and the folder's rights"
        )
    return None


def require_existing_sqlite_file(url: URL) -> None:
    """Read-only commands must not create an empty SQLite file at a mistyped path."""
    if url.get_backend_name() != "sqlite" or url.database in (None, "", ":memory:"):
        return
    database = url.database
    assert database is not None
    if database.startswith("file:"):
        return
    if not Path(database).is_file():
        raise ConfigurationError(
            f"no SQLite database at {database!r}: check the path, or create one with "
            f"'asynctaskmanager upgrade --url {display_url(url)}'"
        )


def _first_line(error: object) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _script() -> ScriptDirectory:
    return ScriptDirectory.from_config(alembic_config())


def _single(down: str | Sequence[str] | None) -> str | None:
    if down is not None and not isinstance(down, str):
        return ",".join(down)
    return down
