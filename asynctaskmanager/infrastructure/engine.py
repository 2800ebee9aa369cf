"""From a URL or a config object to a configured SQLAlchemy engine."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import URL, Engine, create_engine, event, make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.pool import StaticPool

from asynctaskmanager.domain.validation import dumps
from asynctaskmanager.errors import ConfigurationError, ValidationError
from asynctaskmanager.infrastructure.dialects import DialectProfile, profile_for
from asynctaskmanager.infrastructure.forking import install_fork_safety

# Set in a pooled connection's info by whoever ended its transaction (the unit of work) just
# before returning it: the pool's reset rollback can then be skipped.
TRANSACTION_ENDED = "asynctaskmanager.transaction_ended"

DATABASE_URL_ENV = "ASYNCTASK_DATABASE_URL"
DEFAULT_URL = "sqlite:///asynctask.db"
MEMORY = "memory"


@dataclass(frozen=True)
class MySQLConfig:
    """The spec's MySQL Config. Zero means no limit, as in Go's database/sql.

    ``max_open`` caps the open connections, ``max_idle`` how many are kept while idle, and
    ``max_life`` how long a connection lives before it is replaced.
    """

    user: str
    password: str
    database: str
    host: str = "localhost"
    port: int = 3306
    max_open: int = 0
    max_idle: int = 0
    max_life: timedelta = timedelta(0)

    def __post_init__(self) -> None:
        for name in ("user", "database", "host"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value:
                raise ValidationError(name, "must be a non-empty string", value)
        if not isinstance(self.password, str):
            raise ValidationError("password", "must be a string", "***")
        if type(self.port) is not int or not 0 < self.port < 65536:
            raise ValidationError("port", "must be between 1 and 65535", self.port)
        for name in ("max_open", "max_idle"):
            value = getattr(self, name)
            if type(value) is not int or value < 0:
                raise ValidationError(
                    name, "must be an integer of at least 0 (0 = unlimited)", value
                )
        if not isinstance(self.max_life, timedelta) or self.max_life < timedelta(0):
            raise ValidationError(
                "max_life", "must be a timedelta of at least 0 (0 = forever)", self.max_life
            )

    @property
    def url(self) -> URL:
        return URL.create(
            "mysql+mysqldb",
            username=self.user,
            password=self.password,
            host=self.host,
            port=self.port,
            database=self.database,
        )

    def pool_options(self) -> dict[str, Any]:
        """Go's pool settings in QueuePool's terms.

        QueuePool keeps ``pool_size`` connections and opens up to ``max_overflow`` more,
        closing those when they are returned; ``pool_size=0`` means no limit. As in Go, an
        idle limit above the open limit is lowered to it.
        """
        if self.max_open == 0:
            pool_size, overflow = self.max_idle, -1
        else:
            idle = self.max_open if self.max_idle == 0 else min(self.max_idle, self.max_open)
            pool_size, overflow = idle, self.max_open - idle
        life = self.max_life.total_seconds()
        return {
            "pool_size": pool_size,
            "max_overflow": overflow,
            # pool_recycle counts whole seconds and 0 would replace a connection at every
            # checkout; round a sub-second lifetime up to one second.
            "pool_recycle": max(1, math.ceil(life)) if life > 0 else -1,
        }


def resolve_url(target: str | URL | None) -> URL:
    """The URL named by ``target``, the environment, or the embedded default, in that order."""
    if target is None:
        target = os.environ.get(DATABASE_URL_ENV) or DEFAULT_URL
    if isinstance(target, str) and target == MEMORY:
        return make_url("sqlite://")
    try:
        url = make_url(target)
    except ArgumentError as error:
        raise ConfigurationError(f"not a database URL: {target!r}") from error
    if url.drivername in ("mysql", "mariadb", "mariadb+mysqldb"):
        url = url.set(drivername="mysql+mysqldb")
    return url


def is_memory(url: URL) -> bool:
    return url.get_backend_name() == "sqlite" and url.database in (None, "", ":memory:")


def build_engine(url: URL, **pool_options: Any) -> tuple[Engine, DialectProfile]:
    profile = profile_for(url.get_backend_name())
    options = profile.engine_options(url)
    if is_memory(url):
        # One connection is the whole database; the storage serialises its users.
        options["poolclass"] = StaticPool
    options.update(pool_options)
    options["pool_reset_on_return"] = None  # see _reset_unless_ended
    try:
        engine = create_engine(url, json_serializer=dumps, **options)
    except ImportError as error:
        raise ConfigurationError(
            f"the driver for {url.drivername} is not installed; for MySQL install "
            "'asynctaskmanager[mysql]'"
        ) from error
    event.listen(engine, "reset", _reset_unless_ended)
    profile.configure(engine)
    install_fork_safety(engine)
    return engine, profile


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
