"""Connection settings in the spec's terms, for the servers that have them."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, ClassVar

from sqlalchemy import URL

from asynctaskmanager.errors import ConfigurationError, ValidationError
from asynctaskmanager.infrastructure.hosts import parse_hosts, with_hosts


@dataclass(frozen=True)
class ServerConfig:
    """A database server's connection and pool settings, in the spec's terms. Zero means no
    limit, as in Go's database/sql.

    ``max_open`` caps the open connections, ``max_idle`` how many are kept while idle, and
    ``max_life`` how long a connection lives before it is replaced.

    ``hosts``: the nodes of a cluster (``"host"`` or ``"host:port"``), in place of ``host``
    and ``port``; each new connection goes to the first of them that answers and is ready.
    """

    drivername: ClassVar[str]

    user: str
    password: str
    database: str
    host: str = "localhost"
    port: int = 0
    max_open: int = 0
    max_idle: int = 0
    max_life: timedelta = timedelta(0)
    hosts: Sequence[str] = ()

    def __post_init__(self) -> None:
        if isinstance(self.hosts, str) or not all(
            isinstance(host, str) and host for host in self.hosts
        ):
            raise ValidationError("hosts", "must be a list of 'host' or 'host:port'", self.hosts)
        try:
            parse_hosts(",".join(self.hosts)) if self.hosts else None
        except ConfigurationError as error:
            raise ValidationError("hosts", str(error), self.hosts) from None
        object.__setattr__(self, "hosts", tuple(self.hosts))
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
        url = URL.create(
            self.drivername,
            username=self.user,
            password=self.password,
            host=self.host,
            port=self.port,
            database=self.database,
        )
        return with_hosts(url, self.hosts) if self.hosts else url

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


@dataclass(frozen=True)
class MySQLConfig(ServerConfig):
    """The spec's MySQL Config (MySQL or MariaDB, through mysqlclient)."""

    drivername: ClassVar[str] = "mysql+mysqldb"

    port: int = 3306


@dataclass(frozen=True)
class PostgresConfig(ServerConfig):
    """The same settings for PostgreSQL, through psycopg 3."""

    drivername: ClassVar[str] = "postgresql+psycopg"

    port: int = 5432

    def __post_init__(self) -> None:
        if self.hosts:
            raise ValidationError(
                "hosts", "failover across hosts is for MySQL/MariaDB clusters", self.hosts
            )
        super().__post_init__()
