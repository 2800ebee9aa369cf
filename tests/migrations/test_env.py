"""migrations/env.py takes the database handed in through ``config.attributes["connection"]``:
a Connection (as the library does) or an Engine (as tools such as pytest-alembic do).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy import URL, Engine, create_engine, inspect

from asynctaskmanager.infrastructure import migrations
from asynctaskmanager.infrastructure.engine import connect

LIBRARY_TABLES = {"task", "task_config", "task_log", "worker"}


def config_with(handed_in: object) -> Config:
    config = migrations.alembic_config()
    config.attributes["connection"] = handed_in
    return config


def assert_at_head(engine: Engine) -> None:
    assert migrations.current_revision(engine) == migrations.head_revision()
    assert set(inspect(engine).get_table_names()) >= LIBRARY_TABLES


def test_a_plain_engine_upgrades_an_empty_sqlite_database_to_head(tmp_path: Path) -> None:
    """The Engine a tool builds itself, without the library's settings."""
    engine = create_engine(f"sqlite:///{tmp_path}/handed-in.db")
    try:
        assert inspect(engine).get_table_names() == []
        command.upgrade(config_with(engine), "head")
        assert_at_head(engine)
        command.check(config_with(engine))  # the Engine path also compares cleanly
        command.downgrade(config_with(engine), "base")
        assert set(inspect(engine).get_table_names()) <= {"alembic_version"}
    finally:
        engine.dispose()


def test_a_library_engine_upgrades_each_persistent_backend_to_head(database_url: URL) -> None:
    engine = connect(database_url).engine
    try:
        command.upgrade(config_with(engine), "head")
        assert_at_head(engine)
    finally:
        engine.dispose()


@pytest.mark.parametrize("handed_in", ["sqlite://", 42], ids=["url-string", "int"])
def test_anything_else_handed_in_is_refused(handed_in: object) -> None:
    with pytest.raises(TypeError, match="must be a Connection or an Engine"):
        command.upgrade(config_with(handed_in), "head")
