"""From a target (a URL, a config object, ``"memory"`` or nothing) to a configured engine."""

from __future__ import annotations

import os
from typing import Any, NamedTuple

from sqlalchemy import URL, Engine, create_engine, event, make_url
from sqlalchemy.exc import ArgumentError

from asynctaskmanager.domain.validation import dumps
from asynctaskmanager.errors import ConfigurationError
from asynctaskmanager.infrastructure.config import ServerConfig
from asynctaskmanager.infrastructure.dialects import DialectProfile, profile_for
from asynctaskmanager.infrastructure.forking import install_fork_safety
from asynctaskmanager.infrastructure.hosts import multi_host_url

# Set in a pooled connection's info by whoever ended its transaction (the unit of work) just
# before returning it: the pool's reset rollback can then be skipped.
TRANSACTION_ENDED = "asynctaskmanager.transaction_ended"

DATABASE_URL_ENV = "ASYNCTASK_DATABASE_URL"
DEFAULT_URL = "sqlite:///asynctask.db"
MEMORY = "memory"


def resolve_url(target: str | URL | None) -> URL:
    """The URL named by ``target``, the environment, or the embedded default, in that order."""
    if target is None:
        target = os.environ.get(DATABASE_URL_ENV) or DEFAULT_URL
    if isinstance(target, str) and target == MEMORY:
        return make_url("sqlite://")
    try:
        url = (isinstance(target, str) and multi_host_url(target)) or make_url(target)
    except ArgumentError as error:
        raise ConfigurationError(f"not a database URL: {target!r}") from error
    if url.drivername in ("mysql", "mariadb", "mariadb+mysqldb"):
        url = url.set(drivername="mysql+mysqldb")
    elif url.drivername in ("postgresql", "postgres"):
        # psycopg 3, not SQLAlchemy's default psycopg2; "postgres" is libpq's own spelling.
        url = url.set(drivername="postgresql+psycopg")
    return url


class Database(NamedTuple):
    """A configured engine and the profile of its dialect."""

    engine: Engine
    profile: DialectProfile


Target = str | URL | ServerConfig | None


def connect(target: Target = None, **engine_options: Any) -> Database:
    """The engine for ``target``: ``"memory"``, a URL (string or :class:`URL`), a
    :class:`MySQLConfig` or :class:`PostgresConfig`, or None for
    ``$ASYNCTASK_DATABASE_URL``, else the embedded ``sqlite:///asynctask.db``. Nothing is
    sent to the database yet.

    ``engine_options`` go to :func:`sqlalchemy.create_engine` last (pool tuning, say)."""
    if isinstance(target, ServerConfig):
        return _build(target.url, target.pool_options() | engine_options)
    return _build(resolve_url(target), engine_options)


def _build(url: URL, pool_options: dict[str, Any]) -> Database:
    profile = profile_for(url)
    options = profile.engine_options(url) | pool_options
    options["pool_reset_on_return"] = None  # see _reset_unless_ended
    try:
        engine = create_engine(url, json_serializer=dumps, **options)
    except ImportError as error:
        hint = f"; {profile.driver_hint}" if profile.driver_hint else ""
        raise ConfigurationError(
            f"the driver for {url.drivername} is not installed{hint}"
        ) from error
    event.listen(engine, "reset", _reset_unless_ended)
    profile.configure(engine)
    install_fork_safety(engine)
    return Database(engine, profile)


def _reset_unless_ended(dbapi_connection: Any, record: Any, state: Any) -> None:
    """The pool's rollback on return, except after a transaction that is known to be over.

    After a commit the driver has no transaction open, yet the pool would still roll back:
    on MySQL one more round trip per unit of work, a fifth of a short one. Any connection
    not marked (used outside a unit of work) is rolled back as usual; if that fails, the
    pool discards it.
    """
    ended = record is not None and record.info.pop(TRANSACTION_ENDED, False)
    if ended or state.transaction_was_reset:
        return
    if state.asyncio_safe:
        dbapi_connection.rollback()
