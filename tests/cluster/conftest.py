"""Tests against a MariaDB Galera cluster (issue 12).

The cluster comes from ``ASYNCTASK_TEST_GALERA_URL``: the comma-separated URLs of its nodes, as
``scripts/galera-cluster start`` prints them on its last line and ``.ci/galera-steps.sh``
exports. Without it every test here skips with the reason. With it, a cluster that is not whole
(a node down, not Synced, or not a Galera node at all) fails the session instead of skipping:
CI asked for the cluster, so its absence is an error.

``galera_node_urls`` is one freshly created database on the cluster, migrated once, as one URL
per node (the database replicates, so every node sees the same tables). Mark the tests
``@pytest.mark.galera``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import URL, Connection, create_engine, make_url, text
from sqlalchemy.pool import NullPool

from asynctaskmanager import open_storage

GALERA_URL_ENV = "ASYNCTASK_TEST_GALERA_URL"
# How long a DDL statement may take to show on every node: it replicates synchronously, so this
# only bounds a cluster that is failing.
REPLICATION_TIMEOUT_S = 30.0
SCHEMA_EXISTS = text("SELECT COUNT(*) FROM information_schema.schemata WHERE schema_name = :n")


def _wsrep_status(connection: Connection, name: str) -> str:
    row = connection.execute(text("SHOW GLOBAL STATUS LIKE :name"), {"name": name}).one_or_none()
    return "" if row is None else str(row[1])


def _check_node(url: URL, expected_size: int) -> None:
    engine = create_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as connection:
            if not connection.execute(text("SELECT @@wsrep_on")).scalar():
                pytest.fail(f"{url.render_as_string()} is not a Galera node (@@wsrep_on is off)")
            state = _wsrep_status(connection, "wsrep_local_state_comment")
            size = _wsrep_status(connection, "wsrep_cluster_size")
    finally:
        engine.dispose()
    if state != "Synced" or size != str(expected_size):
        pytest.fail(
            f"{url.render_as_string()}: wsrep_local_state_comment={state!r}, "
            f"wsrep_cluster_size={size!r}; expected Synced and {expected_size}"
        )


def _database_on_every_node(server_urls: list[URL], name: str, present: bool) -> None:
    deadline = time.monotonic() + REPLICATION_TIMEOUT_S
    for url in server_urls:
        engine = create_engine(url, poolclass=NullPool)
        try:
            with engine.connect() as connection:
                while True:
                    found = connection.execute(
                        SCHEMA_EXISTS,
                        {"n": name},
                    ).scalar_one()
                    if bool(found) == present:
                        break
                    if time.monotonic() > deadline:
                        pytest.fail(f"database {name} not replicated to {url.render_as_string()}")
                    time.sleep(0.1)
        finally:
            engine.dispose()


def _revision_on_every_node(node_urls: list[URL], head: str | None) -> None:
    """Waits until each node has applied the migration: a node answers reads from what it has
    applied so far, and measured, a node read right after the upgrade still showed the
    revision before the last."""
    for url in node_urls:
        engine = create_engine(url, poolclass=NullPool)
        try:
            with engine.connect() as connection:
                connection.execute(text("SET SESSION wsrep_sync_wait = 1"))
                revision = connection.execute(
                    text("SELECT version_num FROM alembic_version")
                ).scalar_one()
        finally:
            engine.dispose()
        if revision != head:
            pytest.fail(f"{url.render_as_string()} is at revision {revision}, not {head}")


@pytest.fixture(scope="session")
def galera_server_urls() -> list[URL]:
    """The cluster's nodes, each checked to be Synced in a cluster of all of them."""
    configured = os.environ.get(GALERA_URL_ENV, "").strip()
    if not configured:
        pytest.skip(
            f"no Galera cluster: set {GALERA_URL_ENV} (scripts/galera-cluster start prints it)"
        )
    urls = [make_url(part.strip()) for part in configured.split(",") if part.strip()]
    for url in urls:
        _check_node(url, expected_size=len(urls))
    return urls


@pytest.fixture(scope="session")
def galera_node_urls(galera_server_urls: list[URL]) -> Iterator[list[URL]]:
    """A scratch database created through the first node, migrated to head, and seen by every
    node before any test runs; one URL per node, dropped at the end."""
    name = f"atm_galera_{uuid.uuid4().hex[:12]}"
    first = galera_server_urls[0]
    admin = create_engine(first, poolclass=NullPool)
    with admin.begin() as connection:
        connection.execute(text(f"CREATE DATABASE {name} CHARACTER SET utf8mb4"))
    try:
        _database_on_every_node(galera_server_urls, name, present=True)
        node_urls = [url.set(database=name) for url in galera_server_urls]
        with open_storage(node_urls[0], upgrade=True) as storage:
            head = storage.schema_revision()
        _revision_on_every_node(node_urls, head)
        yield node_urls
    finally:
        with admin.begin() as connection:
            connection.execute(text(f"DROP DATABASE IF EXISTS {name}"))
        admin.dispose()


SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "galera-cluster"
GALERA_DIR_ENV = "ASYNCTASK_TEST_GALERA_DIR"
DEFAULT_GALERA_DIR = "/var/tmp/atm-galera"


def multi_host(node_urls: list[URL]) -> str:
    """One URL naming every node, as a user of the library would give it."""
    first = node_urls[0]
    hosts = ",".join(f"{url.host}:{url.port}" for url in node_urls)
    auth = first.username or "root"
    return f"mysql://{auth}@{hosts}/{first.database}"


@pytest.fixture
def galera_multi_host_url(galera_node_urls: list[URL]) -> str:
    return multi_host(galera_node_urls)


class GaleraNodes:
    """Kills a node of the cluster the way a crash does (SIGKILL, by the pid the script
    recorded) and brings it back with ``scripts/galera-cluster start``."""

    def __init__(self, directory: Path, size: int) -> None:
        self.directory = directory
        self.size = size
        self.killed: list[int] = []

    def pid(self, node: int) -> int:
        return int((self.directory / f"node{node}" / "node.pid").read_text().strip())

    def kill(self, node: int) -> None:
        os.kill(self.pid(node), signal.SIGKILL)
        self.killed.append(node)

    def restart(self) -> float:
        """Starts the killed nodes again and waits until all are Synced; the seconds taken."""
        started = time.monotonic()
        subprocess.run(
            [str(SCRIPT), "start", "--nodes", str(self.size), "--dir", str(self.directory)],
            check=True,
            stdout=subprocess.DEVNULL,
            timeout=180,
        )
        self.killed.clear()
        return time.monotonic() - started


@pytest.fixture
def galera_nodes(galera_server_urls: list[URL]) -> Iterator[GaleraNodes]:
    directory = Path(os.environ.get(GALERA_DIR_ENV) or DEFAULT_GALERA_DIR)
    if not (directory / "node1" / "node.pid").exists():
        pytest.fail(f"no pid files under {directory}: set {GALERA_DIR_ENV} to the cluster's --dir")
    nodes = GaleraNodes(directory, len(galera_server_urls))
    try:
        yield nodes
    finally:
        if nodes.killed:
            nodes.restart()
