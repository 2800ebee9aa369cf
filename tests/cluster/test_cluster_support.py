"""The library on a Galera cluster (issue 12, phase 2): it knows it is on one, reruns a
transaction that lost certification instead of reporting an unknown outcome, and reads what
other nodes committed where it asks to."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
from sqlalchemy import URL, text

from asynctaskmanager import (
    ExecutorType,
    Storage,
    Task,
    TaskConfig,
    TaskRequest,
    TransientStorageError,
    Worker,
    open_storage,
)
from asynctaskmanager.cli.doctor import check_cluster, run_checks
from asynctaskmanager.infrastructure.unit_of_work import UnitOfWork
from tests.cluster.conftest import GaleraNodes

pytestmark = pytest.mark.galera


@pytest.fixture
def two_nodes(galera_node_urls: list[URL]) -> Iterator[tuple[Storage, Storage]]:
    first, second = open_storage(galera_node_urls[0]), open_storage(galera_node_urls[1])
    try:
        yield first, second
    finally:
        first.close()
        second.close()


def description_of(storage: Storage, task_type: str) -> str:
    def read(uow: UnitOfWork) -> str:
        return str(
            uow.connection.execute(
                text("SELECT description FROM task_config WHERE task_type = :t"), {"t": task_type}
            ).scalar_one()
        )

    return storage.run(read, read_only=True, sync_wait=True)


def test_the_library_detects_the_cluster(two_nodes: tuple[Storage, Storage]) -> None:
    first, _ = two_nodes
    with first.unit_of_work() as uow:
        assert uow.cluster.is_cluster
    assert first.runner.cluster.galera


def test_the_loser_of_a_certification_conflict_is_rerun_not_reported(
    two_nodes: tuple[Storage, Storage],
) -> None:
    first, second = two_nodes
    first.task_configs.create(TaskConfig("galera-loser", "initial", ExecutorType.FUNCTION))
    take = text("UPDATE task_config SET description = :who WHERE task_type = 'galera-loser'")
    runs: list[int] = []

    def update_then_lose_once(uow: UnitOfWork) -> None:
        runs.append(len(runs))
        uow.connection.execute(take, {"who": "second node"})
        if len(runs) == 1:
            # Node 1 commits the same row while this transaction is open on node 2: row locks
            # are per node, so both updates went through and node 2's COMMIT must lose.
            first.run(lambda other: other.connection.execute(take, {"who": "first node"}))

    second.run(update_then_lose_once)
    assert len(runs) == 2
    assert description_of(first, "galera-loser") == "second node"


def test_sync_wait_is_set_for_the_unit_of_work_only(two_nodes: tuple[Storage, Storage]) -> None:
    first, _ = two_nodes
    session_value = text("SELECT @@SESSION.wsrep_sync_wait")
    with first.unit_of_work(sync_wait=True) as uow:
        assert uow.connection.execute(session_value).scalar_one() == 1
    with first.unit_of_work() as uow:
        assert uow.connection.execute(session_value).scalar_one() == 0


def test_doctor_shows_the_cluster(two_nodes: tuple[Storage, Storage]) -> None:
    _, second = two_nodes
    [result] = run_checks(second, [check_cluster])
    assert result.level == "ok"
    assert "Galera, 3 nodes, this node's index" in result.detail
    assert "Primary" in result.detail


def test_a_storage_moves_to_another_node_when_its_node_dies(
    galera_multi_host_url: str, galera_nodes: GaleraNodes
) -> None:
    """Node 1, the first of the URL's hosts, dies mid-run: enqueues go on through the others;
    one cut by the death is rerun, or reported outcome_unknown, as on one server."""
    port = text("SELECT @@port")
    enqueued: list[str] = []
    unknown = 0
    with open_storage(galera_multi_host_url) as storage:
        storage.task_configs.create(TaskConfig("galera-failover", "f", ExecutorType.FUNCTION))
        assert storage.run(lambda uow: uow.connection.execute(port).scalar_one()) == 3311
        for n in range(300):
            if n == 100:
                galera_nodes.kill(1)
            try:
                enqueued.append(storage.queue.enqueue("galera-failover", {"n": n}).task_id)
            except TransientStorageError as error:
                assert error.outcome_unknown
                unknown += 1
        assert storage.run(lambda uow: uow.connection.execute(port).scalar_one()) != 3311
        stored = storage.run(
            lambda uow: uow.connection.execute(
                text("SELECT COUNT(*) FROM task WHERE task_type = 'galera-failover'")
            ).scalar_one(),
            sync_wait=True,
        )
    assert len(enqueued) + unknown == 300
    assert len(enqueued) <= stored <= 300
    assert unknown <= 1


def test_max_concurrent_holds_across_nodes(galera_node_urls: list[URL]) -> None:
    """Claimers on three nodes at once, a type limited to one running task: row locks are
    per node, so only the claim's write to the type's row (claim_seq) keeps it exact."""
    storages = [open_storage(url) for url in galera_node_urls]
    first = storages[0]
    try:
        first.task_configs.create(
            TaskConfig("galera-one", "one", ExecutorType.FUNCTION, max_concurrent=1)
        )
        first.queue.enqueue_many([TaskRequest("galera-one", {"n": n}) for n in range(40)])
        for n, storage in enumerate(storages):
            storage.queue.register_worker(
                Worker(f"galera-w{n}", "w", "here", capacity=5, supported_types=["galera-one"])
            )
        barrier = threading.Barrier(len(storages))
        errors: list[BaseException] = []
        claimed: list[list[Task]] = [[] for _ in storages]

        def claim(n: int) -> None:
            try:
                barrier.wait(30)
                claimed[n] = storages[n].queue.claim(f"galera-w{n}", limit=5)
            except BaseException as error:
                errors.append(error)

        peak = 0
        for _ in range(15):
            threads = [threading.Thread(target=claim, args=(n,)) for n in range(len(storages))]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(60)
            assert errors == []
            running = [task for tasks in claimed for task in tasks]
            peak = max(peak, len(running))
            for n, tasks in enumerate(claimed):
                for task in tasks:
                    assert storages[n].queue.complete(task, {"ok": True})
        assert peak == 1
        bumps = first.run(
            lambda uow: uow.connection.execute(
                text("SELECT claim_seq FROM task_config WHERE task_type = 'galera-one'")
            ).scalar_one(),
            sync_wait=True,
        )
        assert bumps == 15
    finally:
        for storage in storages:
            storage.close()
