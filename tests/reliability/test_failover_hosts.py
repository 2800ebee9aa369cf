"""Several hosts in one URL or MySQLConfig: each connection goes to the first host that
answers. On one server a refused port stands in for a dead node; tests/cluster kills one."""

from __future__ import annotations

import pytest
from sqlalchemy import URL, text

from asynctaskmanager import ConfigurationError, MySQLConfig, ValidationError, open_storage
from asynctaskmanager.infrastructure.engine import resolve_url
from tests.conftest import mysql_only

# Nothing listens on port 1 of the loopback: the connection is refused at once.
DEAD = "127.0.0.1:1"


@mysql_only
def test_a_dead_first_host_is_skipped(mysql_database_url: URL) -> None:
    alive = f"{mysql_database_url.host}:{mysql_database_url.port or 3306}"
    auth = mysql_database_url.username or "root"
    url = f"mysql://{auth}@{DEAD},{alive}/{mysql_database_url.database}"
    with open_storage(url) as storage:
        assert storage.engine.url.port == 1
        with storage.engine.connect() as connection:
            assert connection.execute(text("SELECT DATABASE()")).scalar_one() == (
                mysql_database_url.database
            )


@mysql_only
def test_mysql_config_takes_hosts(mysql_database_url: URL) -> None:
    config = MySQLConfig(
        user=mysql_database_url.username or "root",
        password=mysql_database_url.password or "",
        database=str(mysql_database_url.database),
        hosts=[DEAD, f"{mysql_database_url.host}:{mysql_database_url.port or 3306}"],
    )
    with open_storage(config) as storage:
        port = storage.run(lambda uow: uow.connection.execute(text("SELECT @@port")).scalar_one())
    assert port == (mysql_database_url.port or 3306)


def test_every_host_dead_is_a_transient_error() -> None:
    from asynctaskmanager import TransientStorageError

    with (
        open_storage(f"mysql://root@{DEAD},127.0.0.1:2/db", check_schema=False) as storage,
        pytest.raises(TransientStorageError),
    ):
        storage.run(lambda uow: uow.connection.execute(text("SELECT 1")))


@pytest.mark.parametrize(
    ("target", "hosts"),
    [
        ("mysql://u@a:3311,b:3312,c/db", "a:3311,b:3312,c:3306"),
        ("mysql://u@a:3311/db,mysql://u@b:3312/db", "a:3311,b:3312"),
        ("mysql://u:p@a,b/db?charset=utf8mb4", "a:3306,b:3306"),
    ],
)
def test_a_host_list_becomes_the_first_host_and_a_hosts_argument(target: str, hosts: str) -> None:
    url = resolve_url(target)
    assert url.query["hosts"] == hosts
    assert f"{url.host}:{url.port}" == hosts.split(",")[0]
    assert url.database == "db"


@pytest.mark.parametrize(
    "target",
    ["mysql://u@a:x,b/db", "mysql://u@a:3311/db,mysql://u@b:3312/other", "mysql://u@a,:3/db"],
)
def test_a_bad_host_list_is_a_configuration_error(target: str) -> None:
    with pytest.raises(ConfigurationError):
        resolve_url(target)


@pytest.mark.parametrize("hosts", [["a:0"], "a,b", [""], ["a:b"]])
def test_mysql_config_refuses_bad_hosts(hosts: object) -> None:
    with pytest.raises(ValidationError) as raised:
        MySQLConfig(user="u", password="", database="db", hosts=hosts)  # type: ignore[arg-type]
    assert raised.value.field == "hosts"
