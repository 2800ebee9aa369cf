"""The checks of the attempts a caller hands back: each a Task that claim() returned, still
in a state that may end the way asked, held by a worker."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TypeVar

from asynctaskmanager.domain.enums import TaskStatus
from asynctaskmanager.domain.lifecycle import ensure_transition
from asynctaskmanager.domain.models import Task
from asynctaskmanager.errors import IllegalTransitionError, ValidationError
from asynctaskmanager.queue.claim import CLAIM_MAX

T = TypeVar("T")


def held_attempt(task: object, to_status: TaskStatus) -> Task:
    if not isinstance(task, Task):
        raise ValidationError("task", "must be the Task returned by claim()", task)
    ensure_transition(task.task_id, task.status, to_status)
    if task.worker_id is None:
        raise IllegalTransitionError(task.task_id, task.status.value, to_status.value)
    return task


def held_attempts(items: Iterable[tuple[Task, T]], to_status: TaskStatus) -> list[tuple[Task, T]]:
    """``(task, value)`` pairs, at most CLAIM_MAX, each task once and held."""
    if isinstance(items, (str, bytes)) or not isinstance(items, Iterable):
        raise ValidationError("items", "must be an iterable of (task, value) pairs", items)
    batch = list(items)
    if len(batch) > CLAIM_MAX:
        raise ValidationError("items", f"at most {CLAIM_MAX} in one call", len(batch))
    seen: set[str] = set()
    for index, item in enumerate(batch):
        if not isinstance(item, tuple) or len(item) != 2:
            raise ValidationError(f"items[{index}]", "must be a (task, value) pair", item)
        held_attempt(item[0], to_status)
        if item[0].task_id in seen:
            raise ValidationError(f"items[{index}]", "names a task twice", item[0].task_id)
        seen.add(item[0].task_id)
    return batch
