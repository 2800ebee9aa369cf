"""What the cluster plumbing gives and what the library's cluster support (issue 12) builds on:
every node serves the one migrated database, a write through one node is read through another
once the read waits for the cluster, and two nodes taking the same row end in a certification
conflict (1213) at the second COMMIT."""

from __future__ import annotations

import pytest
from sqlalchemy import URL, create_engine, text
from sqlalchemy.exc import OperationalError
from sqlalchemy.pool import NullPool

from asynctaskmanager import ExecutorType, TaskConfig, open_storage

pytestmark = pytest.mark.galera

MYSQL_DEADLOCK = 1213


def test_every_node_serves_the_migrated_schema(galera_node_urls: list[URL]) -> None:
    revisions = set()
    for url in galera_node_urls:
        with open_storage(url) as storage:
            revisions.add(storage.schema_revision())
    assert len(revisions) == 1
    assert None not in revisions


def test_a_task_enqueued_through_one_node_is_read_through_another(
    galera_node_urls: list[URL],
) -> None:
    first, last = galera_node_urls[0], galera_node_urls[-1]
    with open_storage(first) as storage:
        storage.task_configs.create(TaskConfig("galera-read", "read", ExecutorType.FUNCTION))
        task = storage.queue.enqueue("galera-read", {"n": 1})
    engine = create_engine(last, poolclass=NullPool)
    try:
        with engine.connect() as connection:
            # Without it a read may run before the node has applied the other node's commit.
            connection.execute(text("SET SESSION wsrep_sync_wait = 1"))
            status = connection.execute(
                text("SELECT status FROM task WHERE task_id = :id"), {"id": task.task_id}
            ).scalar_one()
    finally:
        engine.dispose()
    assert status == "pending"


def test_the_same_row_taken_on_two_nodes_fails_the_second_commit_with_1213(
    galera_node_urls: list[URL],
) -> None:
    first, second = galera_node_urls[0], galera_node_urls[1]
    with open_storage(first) as storage:
        storage.task_configs.create(TaskConfig("galera-race", "race", ExecutorType.FUNCTION))
    engines = [create_engine(url, poolclass=NullPool) for url in (first, second)]
    take = text("UPDATE task_config SET description = :who WHERE task_type = 'galera-race'")
    try:
        with engines[0].connect() as winner, engines[1].connect() as loser:
            winner.begin()
            loser.begin()
            # Row locks are per node: both updates go through at once.
            winner.execute(take, {"who": "first"})
            loser.execute(take, {"who": "second"})
            winner.commit()
            with pytest.raises(OperationalError) as raised:
                loser.execute(text("SELECT 1"))
                loser.commit()
            assert raised.value.orig.args[0] == MYSQL_DEADLOCK  # type: ignore[union-attr]
        with engines[1].connect() as reader:
            reader.execute(text("SET SESSION wsrep_sync_wait = 1"))
            description = reader.execute(
                text("SELECT description FROM task_config WHERE task_type = 'galera-race'")
            ).scalar_one()
        assert description == "first"
    finally:
        for engine in engines:
            engine.dispose()
