"""Alembic environment.

The database is, in order: a connection handed in by code (``config.attributes``), the URL
set on the config, or ``ASYNCTASK_DATABASE_URL``, defaulting to ``sqlite:///asynctask.db``.
Engines are built by the library itself, so migrations run with the same session settings
(UTC, utf8mb4, strict SQL mode) as the application.
"""

from __future__ import annotations

from typing import Any

from alembic import context
from alembic.autogenerate.api import AutogenContext
from sqlalchemy import Connection

from asynctaskmanager.infrastructure.engine import build_engine, resolve_url
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


def run_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _configure(connection)
        with context.begin_transaction():
            context.run_migrations()
        return
    engine, _profile = build_engine(resolve_url(config.get_main_option("sqlalchemy.url")))
    try:
        with engine.connect() as connection:
            _configure(connection)
            with context.begin_transaction():
                context.run_migrations()
            connection.commit()
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_offline()
else:
    run_online()
