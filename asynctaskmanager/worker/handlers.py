"""Running one handler, in a pool thread or a spawned process, and checking handlers."""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import pickle
from collections.abc import Callable, Mapping
from typing import Any

from asynctaskmanager import ConfigurationError, Task, ValidationError
from asynctaskmanager.domain import limits
from asynctaskmanager.domain import validation as check

Handler = Callable[[Task], Any]
"""Runs one task: gets the claimed :class:`Task` (``task.payload``, ``task.task_id``,
``task.retry_count``...) and returns the task's result, a JSON document (or None). An
exception fails the attempt with its message; the type's retry strategy applies."""

Result = tuple[bool, Any]


def make_executor(concurrency: int, *, use_processes: bool) -> concurrent.futures.Executor:
    if use_processes:
        # spawn: forking a process that runs threads and holds connections is unsafe.
        return concurrent.futures.ProcessPoolExecutor(
            max_workers=concurrency, mp_context=multiprocessing.get_context("spawn")
        )
    return concurrent.futures.ThreadPoolExecutor(
        max_workers=concurrency, thread_name_prefix="asynctaskmanager-task"
    )


def call_handler(handler: Handler, task: Task) -> Result:
    """(True, result) or (False, error message): never raises, so that nothing unpicklable
    crosses a process boundary."""
    try:
        result = handler(task)
        check.json_document("result", result)
    except Exception as error:
        return False, describe_error(error)
    return True, result


def describe_error(error: BaseException) -> str:
    message = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
    encoded = message.encode("utf-8")
    if len(encoded) <= limits.TEXT_MAX_BYTES:
        return message
    return encoded[: limits.TEXT_MAX_BYTES - 3].decode("utf-8", "ignore") + "..."


def checked_handlers(handlers: object, use_processes: bool) -> dict[str, Handler]:
    if not isinstance(handlers, Mapping) or not handlers:
        raise ValidationError(
            "handlers", "must be a non-empty mapping of task type to callable", handlers
        )
    checked: dict[str, Handler] = {}
    for task_type, handler in handlers.items():
        check.identifier("handlers key", task_type)
        if not callable(handler):
            raise ValidationError(f"handlers[{task_type!r}]", "must be callable", handler)
        if use_processes:
            try:
                pickle.dumps(handler)
            except Exception as error:
                raise ConfigurationError(
                    f"handler of {task_type!r} cannot run in a process pool: {error} "
                    "(use a module-level function)"
                ) from error
        checked[task_type] = handler
    return checked
