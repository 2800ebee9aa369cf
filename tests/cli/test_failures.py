"""Failures as a user meets them: a wrong password, a missing database, a closed port, an
unknown revision, a schema behind the library, a spec-DDL database never stamped, a
mistyped SQLite path. Each is a short message saying what to do, never a traceback (unless
--debug), and the library raises only its own errors for them."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from sqlalchemy import URL, inspect, text

from asynctaskmanager import (
    SchemaOutOfDateError,
    StorageError,
    TransientStorageError,
    open_storage,
)
from asynctaskmanager.infrastructure import migrations
from asynctaskmanager.infrastructure.engine import connect
from tests.cli.conftest import Run, assert_short_failure, url_text

SPEC_SCHEMA = Path(__file__).resolve().parent.parent / "migrations" / "fixtures" / "spec_schema.sql"
COMMANDS = [
    ["status"],
    ["tasks", "list"],
    ["workers", "list"],
    ["doctor"],
    ["current"],
    ["upgrade"],
    ["prune", "--days", "1"],
]


# --- cannot reach or enter the database (MySQL) ----------------------------------------------


@pytest.fixture
def wrong_password(mysql_database_url: URL) -> str:
    return url_text(mysql_database_url.set(username="nobody_here", password="wrong"))


@pytest.fixture
def missing_database(mysql_server_url: URL) -> str:
    return url_text(mysql_server_url.set(database="atm_no_such_database"))


@pytest.fixture
def closed_port(mysql_database_url: URL) -> str:
    return url_text(mysql_database_url.set(host="127.0.0.1", port=1))


@pytest.mark.mysql
@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: "-".join(c))
def test_wrong_password(run: Run, wrong_password: str, command: list[str]) -> None:
    assert_short_failure(
        run(*command, "--url", wrong_password), "access denied", "check the user and password"
    )


@pytest.mark.mysql
@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: "-".join(c))
def test_missing_database(run: Run, missing_database: str, command: list[str]) -> None:
    assert_short_failure(
        run(*command, "--url", missing_database),
        "'atm_no_such_database' does not exist",
        "CREATE DATABASE",
    )


@pytest.mark.mysql
@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: "-".join(c))
def test_closed_port(run: Run, closed_port: str, command: list[str]) -> None:
    assert_short_failure(
        run(*command, "--url", closed_port), "cannot connect to 127.0.0.1:1", "--url"
    )


@pytest.mark.mysql
def test_debug_adds_the_traceback(run: Run, closed_port: str) -> None:
    result = run("status", "--url", closed_port, "--debug")
    assert result.exit_code == 1
    assert "Traceback" in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("asynctaskmanager: cannot connect")


@pytest.mark.mysql
def test_the_library_raises_its_own_errors(wrong_password: str, closed_port: str) -> None:
    with pytest.raises(StorageError, match="access denied"):
        open_storage(wrong_password)
    storage = open_storage(wrong_password, check_schema=False)
    try:
        with pytest.raises(StorageError, match="access denied"):
            storage.schema_revision()
        with pytest.raises(StorageError, match="access denied"):
            storage.upgrade()
    finally:
        storage.close()
    with pytest.raises(TransientStorageError, match="cannot connect"):
        open_storage(closed_port)


# --- revisions and schema state (SQLite and MySQL) -------------------------------------------


@pytest.mark.parametrize("command", ["upgrade", "downgrade", "stamp"])
def test_unknown_revision(run: Run, database_url: URL, command: str) -> None:
    url = url_text(database_url)
    assert run("upgrade", "--url", url).exit_code == 0
    assert_short_failure(run(command, "zzzz", "--url", url), "'zzzz'", "asynctaskmanager history")


def test_unknown_revision_from_the_library(database_url: URL) -> None:
    with (
        open_storage(database_url, upgrade=True) as storage,
        pytest.raises(StorageError, match="zzzz"),
    ):
        storage.upgrade("zzzz")


def test_a_schema_behind_is_refused_with_the_command_to_run(
    run: Run, database_url: URL, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = url_text(database_url)
    assert run("upgrade", "0002", "--url", url).exit_code == 0
    assert_short_failure(
        run("status", "--url", url), "at revision 0002", "asynctaskmanager upgrade --url"
    )
    with pytest.raises(SchemaOutOfDateError) as raised:
        open_storage(database_url)
    assert (raised.value.current, raised.value.head) == ("0002", migrations.head_revision())
    # The opt-outs, for a rolling upgrade.
    open_storage(database_url, check_schema=False).close()
    monkeypatch.setenv(migrations.SKIP_SCHEMA_CHECK_ENV, "1")
    open_storage(database_url).close()
    monkeypatch.delenv(migrations.SKIP_SCHEMA_CHECK_ENV)
    # upgrade=True brings it to head instead.
    with open_storage(database_url, upgrade=True) as storage:
        assert storage.schema_revision() == migrations.head_revision()
    open_storage(database_url).close()


def test_an_empty_database_opens_for_its_first_upgrade(database_url: URL) -> None:
    storage = open_storage(database_url)
    try:
        assert storage.schema_revision() is None
    finally:
        storage.close()


def _drop_version_table(url: URL) -> None:
    engine = connect(url).engine
    try:
        with engine.begin() as connection:
            connection.execute(text("DROP TABLE alembic_version"))
    finally:
        engine.dispose()


def _tables(url: URL) -> set[str]:
    engine = connect(url).engine
    try:
        return set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


def test_tables_without_a_revision_ask_for_a_stamp(run: Run, database_url: URL) -> None:
    url = url_text(database_url)
    assert run("upgrade", "0001", "--url", url).exit_code == 0
    _drop_version_table(database_url)
    for command in (["upgrade"], ["status"]):
        assert_short_failure(
            run(*command, "--url", url), "no schema revision", "asynctaskmanager stamp 0001"
        )
    assert "alembic_version" not in _tables(database_url)
    with pytest.raises(SchemaOutOfDateError, match="stamp 0001"):
        open_storage(database_url, upgrade=True)
    assert "alembic_version" not in _tables(database_url)
    assert run("stamp", "0001", "--url", url).exit_code == 0
    assert run("upgrade", "--url", url).stdout.strip() == migrations.head_revision()


@pytest.mark.mysql
def test_adopting_a_spec_ddl_database_without_stamp(run: Run, fresh_mysql_database: URL) -> None:
    engine = connect(fresh_mysql_database).engine
    try:
        with engine.begin() as connection:
            for statement in SPEC_SCHEMA.read_text(encoding="utf-8").split(";"):
                if statement.strip():
                    connection.exec_driver_sql(statement)
    finally:
        engine.dispose()
    url = url_text(fresh_mysql_database)
    assert_short_failure(
        run("upgrade", "--url", url),
        "no schema revision",
        "asynctaskmanager stamp 0001",
        "then 'asynctaskmanager upgrade",
    )
    assert "alembic_version" not in _tables(fresh_mysql_database)
    assert run("stamp", "0001", "--url", url).exit_code == 0
    assert run("upgrade", "--url", url).exit_code == 0
    assert run("doctor", "--url", url).exit_code == 0


# --- a mistyped SQLite path ------------------------------------------------------------------


@pytest.mark.parametrize("command", [c for c in COMMANDS if c != ["upgrade"]], ids=str)
def test_a_missing_sqlite_file_is_not_created(run: Run, tmp_path: Path, command: list[str]) -> None:
    missing = tmp_path / "typo.db"
    assert_short_failure(
        run(*command, "--url", f"sqlite:///{missing}"), "no SQLite database at", "check the path"
    )
    assert not missing.exists()


def test_upgrade_creates_the_sqlite_file(run: Run, tmp_path: Path) -> None:
    created = tmp_path / "new.db"
    assert run("upgrade", "--url", f"sqlite:///{created}").exit_code == 0
    with sqlite3.connect(created) as connection:
        assert connection.execute("SELECT version_num FROM alembic_version").fetchone()
