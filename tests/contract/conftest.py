"""Fixtures of the backend-parametrized suite (the backends themselves are in tests/conftest.py)."""

from __future__ import annotations

import pytest

from asynctaskmanager import Storage, TaskQueue
from tests.support.queue_helpers import NO_JITTER


@pytest.fixture
def queue(storage: Storage) -> TaskQueue:
    """A queue without retry jitter, so that back-off delays can be checked exactly."""
    return TaskQueue(storage.runner, NO_JITTER)
