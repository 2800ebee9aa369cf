"""The worker's logging: stdlib ``logging``, logger ``asynctaskmanager.worker``.

Every line about a task starts with its id and type, and carries ``task_id``, ``task_type``
and ``worker_id`` as record attributes for structured handlers.
"""

from __future__ import annotations

import logging
from collections.abc import MutableMapping
from typing import Any

from asynctaskmanager import Task

logger = logging.getLogger("asynctaskmanager.worker")


class TaskLogger(logging.LoggerAdapter[logging.Logger]):
    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, Any]:
        extra = self.extra or {}
        kwargs["extra"] = {**extra, **kwargs.get("extra", {})}
        return f"task {extra['task_id']} ({extra['task_type']}): {msg}", kwargs


def task_logger(task: Task) -> TaskLogger:
    return TaskLogger(
        logger,
        {"task_id": task.task_id, "task_type": task.task_type, "worker_id": task.worker_id},
    )
