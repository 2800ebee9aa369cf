"""Opt-in monthly partitions of ``task`` and ``task_log`` (MySQL and MariaDB).

``enable(storage)`` partitions the tables, ``partition_status(storage)`` describes them and
``rotate(storage, ahead=..., retain_months=...)`` keeps empty months ahead and drops old ones.
``storage.queue.prune`` drops whole months where it can (``pruning.drop_prunable_months``).
SQLite and the memory backend do not partition: these raise ConfigurationError there.
"""

from asynctaskmanager.partitions.lease import DEFAULT_LOCK_WAIT_SECONDS
from asynctaskmanager.partitions.manager import (
    DEFAULT_AHEAD,
    HeldMonth,
    PartitionInfo,
    RotationReport,
    disable,
    enable,
    partition_status,
    rotate,
)
from asynctaskmanager.partitions.months import id_at

__all__ = [
    "DEFAULT_AHEAD",
    "DEFAULT_LOCK_WAIT_SECONDS",
    "HeldMonth",
    "PartitionInfo",
    "RotationReport",
    "disable",
    "enable",
    "id_at",
    "partition_status",
    "rotate",
]
