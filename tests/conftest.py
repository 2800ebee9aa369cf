"""Backends for the test suite.

``storage`` runs a test on memory, an SQLite file, MySQL, MySQL with the task tables
partitioned by month (asynctaskmanager.partitions), and PostgreSQL. Each server is, in
order: its URL variable (``ASYNCTASK_TEST_MYSQL_URL``, ``ASYNCTASK_TEST_POSTGRES_URL``); a
testcontainers container (MySQL 8, PostgreSQL 15) when a Docker engine answers a quick
probe; else its cases skip with the reason. Each test session works in its own freshly
created database on that server, migrated once; each test starts from empty tables.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import URL, create_engine, make_url, text
from sqlalchemy.pool import NullPool

from asynctaskmanager import Storage, open_storage, partitions
from asynctaskmanager.infrastructure.engine import resolve_url
from tests.cluster.conftest import galera_node_urls, galera_server_urls, multi_host

MYSQL_URL_ENV = "ASYNCTASK_TEST_MYSQL_URL"
POSTGRES_URL_ENV = "ASYNCTASK_TEST_POSTGRES_URL"
TABLES = ("task_log", "task", "worker", "task_config", "lease")

mysql_only = pytest.mark.mysql
postgres_only = pytest.mark.postgres
galera_only = pytest.mark.galera
__all__ = ["galera_node_urls", "galera_server_urls"]  # fixtures of tests/cluster, shared


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "mysql: needs a MySQL or MariaDB server")
    config.addinivalue_line("markers", "postgres: needs a PostgreSQL server")
    config.addinivalue_line("markers", "galera: needs a MariaDB Galera cluster")


def _docker_answers() -> bool:
    try:
        import docker  # type: ignore[import-untyped]

        docker.from_env(timeout=2).ping()
        return True
    except Exception:
        return False


@pytest.fixture(scope="session")
def mysql_server_url() -> Iterator[URL]:
    """A URL of a MySQL/MariaDB server with rights to create databases."""
    configured = os.environ.get(MYSQL_URL_ENV)
    if configured:
        yield resolve_url(configured)
        return
    if not _docker_answers():
        pytest.skip(f"no MySQL: set {MYSQL_URL_ENV} or run a Docker engine for testcontainers")
    from testcontainers.mysql import MySqlContainer

    with MySqlContainer("mysql:8.0", username="root", password="test") as container:
        yield resolve_url(container.get_connection_url())


@pytest.fixture(scope="session")
def postgres_server_url() -> Iterator[URL]:
    """A URL of a PostgreSQL server with rights to create databases."""
    configured = os.environ.get(POSTGRES_URL_ENV)
    if configured:
        yield resolve_url(configured)
        return
    if not _docker_answers():
        pytest.skip(
            f"no PostgreSQL: set {POSTGRES_URL_ENV} or run a Docker engine for testcontainers"
        )
    from testcontainers.postgres import PostgresContainer

    with PostgresContainer("postgres:15", driver="psycopg") as container:
        yield resolve_url(container.get_connection_url())


@contextmanager
def scratch_database(server_url: URL) -> Iterator[URL]:
    """An empty database of its own on the server, dropped afterwards."""
    name = f"atm_test_{uuid.uuid4().hex[:12]}"
    if server_url.get_backend_name() == "postgresql":
        # CREATE DATABASE runs outside a transaction; FORCE ends a test's leftover sessions.
        admin = create_engine(server_url, poolclass=NullPool, isolation_level="AUTOCOMMIT")
        create, drop = f"CREATE DATABASE {name}", f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"
    else:
        admin = create_engine(server_url, poolclass=NullPool)
        create, drop = f"CREATE DATABASE {name} CHARACTER SET utf8mb4", f"DROP DATABASE {name}"
    with admin.begin() as connection:
        connection.execute(text(create))
    try:
        yield server_url.set(database=name)
    finally:
        with admin.begin() as connection:
            connection.execute(text(drop))
        admin.dispose()


@pytest.fixture(scope="session")
def mysql_database_url(mysql_server_url: URL) -> Iterator[URL]:
    """A fresh database for this test session, migrated to head, dropped at the end."""
    with scratch_database(mysql_server_url) as url:
        open_storage(url, upgrade=True).close()
        yield url


@pytest.fixture
def fresh_mysql_database(mysql_server_url: URL) -> Iterator[URL]:
    """An empty database of its own, for tests that migrate or break the schema."""
    with scratch_database(mysql_server_url) as url:
        yield url


def empty_tables(storage: Storage) -> None:
    with storage.engine.begin() as connection:
        for table in TABLES:
            connection.execute(text(f"DELETE FROM {table}"))


@pytest.fixture(scope="session")
def postgres_database_url(postgres_server_url: URL) -> Iterator[URL]:
    """A fresh database for this test session, migrated to head, dropped at the end."""
    with scratch_database(postgres_server_url) as url:
        open_storage(url, upgrade=True).close()
        yield url


@pytest.fixture
def fresh_postgres_database(postgres_server_url: URL) -> Iterator[URL]:
    """An empty database of its own, for tests that migrate or break the schema."""
    with scratch_database(postgres_server_url) as url:
        yield url


@contextmanager
def emptied_storage(url: URL) -> Iterator[Storage]:
    storage = open_storage(url)
    empty_tables(storage)
    try:
        yield storage
    finally:
        storage.close()


@pytest.fixture
def mysql_storage(mysql_database_url: URL) -> Iterator[Storage]:
    with emptied_storage(mysql_database_url) as storage:
        yield storage


@pytest.fixture(scope="session")
def mysql_partitioned_database_url(mysql_server_url: URL) -> Iterator[URL]:
    """Like ``mysql_database_url``, then ``task`` and ``task_log`` partitioned by month."""
    with scratch_database(mysql_server_url) as url:
        storage = open_storage(url, upgrade=True)
        try:
            partitions.enable(storage)
        finally:
            storage.close()
        yield url


@pytest.fixture
def mysql_partitioned_storage(mysql_partitioned_database_url: URL) -> Iterator[Storage]:
    with emptied_storage(mysql_partitioned_database_url) as storage:
        yield storage


@pytest.fixture
def postgres_storage(postgres_database_url: URL) -> Iterator[Storage]:
    with emptied_storage(postgres_database_url) as storage:
        yield storage


@pytest.fixture
def sqlite_url(tmp_path: Path) -> URL:
    return make_url(f"sqlite:///{tmp_path}/asynctask.db")


@pytest.fixture
def sqlite_storage(sqlite_url: URL) -> Iterator[Storage]:
    storage = open_storage(sqlite_url, upgrade=True)
    try:
        yield storage
    finally:
        storage.close()


@pytest.fixture
def memory_storage() -> Iterator[Storage]:
    storage = open_storage("memory")
    try:
        yield storage
    finally:
        storage.close()


@pytest.fixture
def galera_storage(galera_node_urls: list[URL]) -> Iterator[Storage]:
    """The cluster's scratch database through one URL naming every node (failover order)."""
    storage = open_storage(multi_host(galera_node_urls))
    empty_tables(storage)
    try:
        yield storage
    finally:
        storage.close()


BACKENDS = [
    pytest.param("memory", id="memory"),
    pytest.param("sqlite", id="sqlite"),
    pytest.param("mysql", id="mysql", marks=mysql_only),
    pytest.param("mysql_partitioned", id="mysql_partitioned", marks=mysql_only),
    pytest.param("postgres", id="postgres", marks=postgres_only),
    pytest.param("galera", id="galera", marks=galera_only),
]
SERVER_BACKENDS = [
    pytest.param("sqlite", id="sqlite"),
    pytest.param("mysql", id="mysql", marks=mysql_only),
    pytest.param("mysql_partitioned", id="mysql_partitioned", marks=mysql_only),
    pytest.param("postgres", id="postgres", marks=postgres_only),
]
# An empty, unmigrated database cannot be partitioned yet: database_url skips that backend.
UNMIGRATED_BACKENDS = [p for p in SERVER_BACKENDS if p.id != "mysql_partitioned"]


@pytest.fixture(params=BACKENDS)
def storage(request: pytest.FixtureRequest) -> Storage:
    """The same test on every backend; a server starts only when its case is selected."""
    return request.getfixturevalue(f"{request.param}_storage")  # type: ignore[no-any-return]


@pytest.fixture(params=SERVER_BACKENDS)
def persistent_storage(request: pytest.FixtureRequest) -> Storage:
    """sqlite file, mysql and postgres: the backends several processes can share."""
    return request.getfixturevalue(f"{request.param}_storage")  # type: ignore[no-any-return]


@pytest.fixture(params=UNMIGRATED_BACKENDS)
def database_url(request: pytest.FixtureRequest) -> URL:
    """An empty, unmigrated database of each persistent kind."""
    if request.param == "sqlite":
        return request.getfixturevalue("sqlite_url")  # type: ignore[no-any-return]
    return request.getfixturevalue(f"fresh_{request.param}_database")  # type: ignore[no-any-return]
