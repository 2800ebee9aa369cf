"""What differs between the databases, one module per dialect.

A :class:`DialectProfile` knows how to open and set up connections, how a claim locks its
rows and how to read the driver's errors. The rest of the library asks the profile and never
tests the dialect name itself. Two things render per dialect through SQLAlchemy's own
dispatch instead: the column types of ``types.py`` and the expressions of
``expressions.py``.

The error translation built on :attr:`DialectProfile.classify` is
:mod:`asynctaskmanager.infrastructure.errors`.
"""

from __future__ import annotations

from sqlalchemy import URL

from asynctaskmanager.errors import ConfigurationError
from asynctaskmanager.infrastructure.dialects import mysql, postgresql, sqlite
from asynctaskmanager.infrastructure.dialects.profile import (
    NOT_A_CLUSTER,
    READ_ONLY,
    ClusterInfo,
    DialectProfile,
    ErrorKind,
)

__all__ = [
    "NOT_A_CLUSTER",
    "READ_ONLY",
    "ClusterInfo",
    "DialectProfile",
    "ErrorKind",
    "profile_for",
]

_SERVERS = {
    "mysql": mysql.PROFILE,
    "mariadb": mysql.PROFILE,
    "postgresql": postgresql.PROFILE,
}


def profile_for(url: URL) -> DialectProfile:
    """The profile of the database ``url`` names."""
    backend = url.get_backend_name()
    if backend == "sqlite":
        return sqlite.MEMORY if sqlite.is_memory(url) else sqlite.FILE
    try:
        return _SERVERS[backend]
    except KeyError:
        supported = ", ".join(sorted([*_SERVERS, "sqlite"]))
        raise ConfigurationError(
            f"unsupported database {backend!r}; supported: {supported}"
        ) from None
