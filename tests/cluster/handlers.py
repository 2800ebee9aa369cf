"""The handlers of the cluster's worker processes: two types, one held to a small limit."""

from __future__ import annotations

from typing import Any

from asynctaskmanager import Task

LIMITED = "galera.limited"
FREE = "galera.free"


def echo(task: Task) -> Any:
    return {"n": task.payload["n"]}


HANDLERS = {LIMITED: echo, FREE: echo}
