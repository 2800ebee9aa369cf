"""Alembic environment.

The database is, in order: a ``Connection`` or an ``Engine`` handed in by code
(``config.attributes["connection"]``; tools such as pytest-alembic hand in an Engine), the
URL set on the config, or ``ASYNCTASK_DATABASE_URL``, defaulting to
``sqlite:///asynctask.db``.
Engines are built by the library itself, so migrations run with the same session settings
(UTC, utf8mb4, strict SQL mode) as the application.
"""

from __future__ import annotations

from typing import Any

from alembic import context
from alembic.autogenerate.api import AutogenContext
from sqlalchemy import Connection, Engine

from asynctaskmanager.infrastructure.engine import connect, resolve_url
from asynctaskmanager.infrastructure.schema import Base
from asynctaskmanager.infrastructure.types import UTCDateTime

config = context.config
target_metadata = Base.metadata


def render_item(type_: str, obj: Any, autogen_context: AutogenContext) -> str | bool:
    """Render the library's custom types as the plain types they store as."""
    if type_ == "type" and isinstance(obj, UTCDateTime):
        return "sa.TIMESTAMP()"
    return False


def _configure(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=True,
        compare_type=True,
        compare_server_default=True,
        render_item=render_item,
    )


def run_offline() -> None:
    context.configure(
        url=resolve_url(config.get_main_option("sqlalchemy.url")),
        target_metadata=target_metadata,
        literal_binds=True,
        render_as_batch=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def _migrate(connection: Connection) -> None:
    _configure(connection)
    with context.begin_transaction():
        context.run_migrations()


def _migrate_with(engine: Engine) -> None:
    with engine.connect() as connection:
        _migrate(connection)
        connection.commit()


def run_online() -> None:
    handed_in = config.attributes.get("connection")
    if isinstance(handed_in, Connection):
        _migrate(handed_in)
    elif isinstance(handed_in, Engine):
        _migrate_with(handed_in)
    elif handed_in is not None:
        raise TypeError(
            f"config.attributes['connection'] must be a Connection or an Engine, not {handed_in!r}"
        )
    else:
        engine = connect(config.get_main_option("sqlalchemy.url")).engine
        try:
            _migrate_with(engine)
        finally:
            engine.dispose()


if context.is_offline_mode():
    run_offline()
else:
    run_online()
