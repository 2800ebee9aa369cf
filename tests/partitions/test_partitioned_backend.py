"""The ``mysql_partitioned`` backend of the contract suite really runs on partitioned tables."""

from __future__ import annotations

from asynctaskmanager import ExecutorType, Storage, TaskConfig
from asynctaskmanager.partitions import partition_status
from asynctaskmanager.partitions.months import month_start, partition_name
from tests.conftest import mysql_only

pytestmark = mysql_only


def test_the_partitioned_backend_stores_tasks_in_month_partitions(
    mysql_partitioned_storage: Storage,
) -> None:
    storage = mysql_partitioned_storage
    storage.task_configs.create(TaskConfig("job", "Job", ExecutorType.FUNCTION))
    task = storage.queue.enqueue("job")
    assert task.created_at is not None
    current = partition_name(month_start(task.created_at))
    status = partition_status(storage)
    for table in ("task", "task_log"):
        names = [p.name for p in status if p.table == table]
        assert names[0] == "p_low" and names[-2:] == ["p_future", "p_named"]
        assert current in names
    [month] = [p for p in status if p.table == "task" and p.name == current]
    assert month.unfinished == 1
