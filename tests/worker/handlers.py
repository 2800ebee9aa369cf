"""Handlers the worker tests run, importable by a worker in another process."""

from __future__ import annotations

import time
from typing import Any

from asynctaskmanager import Task


def echo(task: Task) -> Any:
    return {"echo": task.payload}


def sleep(task: Task) -> Any:
    time.sleep(task.payload["seconds"])
    return {"slept": task.payload["seconds"]}


def boom(task: Task) -> Any:
    raise ValueError(f"bad payload {task.payload}")


HANDLERS = {"work.echo": echo, "work.sleep": sleep, "work.boom": boom}
NOT_A_MAPPING = 42
