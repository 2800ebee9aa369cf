"""The library's own exceptions.

Every error that leaves the public API is one of these, whatever the backend. Driver errors
are translated in :mod:`asynctaskmanager.infrastructure.errors` and chained with ``from``.
"""

from __future__ import annotations

import pickle
from typing import Any


class AsyncTaskManagerError(Exception):
    """Base of every error raised by asynctaskmanager.

    Every error pickles with its fields (``__reduce__`` rebuilds it from its constructor's
    arguments and restores the rest of its attributes), so that one raised in a
    ``multiprocessing`` worker reaches the parent intact.
    """

    retryable: bool = False

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or (self.__doc__ or type(self).__name__).strip())

    def _constructor_args(self) -> tuple[Any, ...]:
        return (str(self),)

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), self._constructor_args(), dict(self.__dict__))


class ValidationError(AsyncTaskManagerError, ValueError):
    """A value is not acceptable; ``field`` names it and ``limit`` says what is allowed."""

    def __init__(self, field: str, limit: str, value: Any = None) -> None:
        self.field = field
        self.limit = limit
        self.value = value
        shown = repr(value)
        if len(shown) > 80:
            shown = shown[:77] + "..."
        super().__init__(f"{field}: {limit} (got {shown})")

    def _constructor_args(self) -> tuple[Any, ...]:
        return (self.field, self.limit, _picklable(self.value))

    def __reduce__(self) -> tuple[Any, ...]:
        state = dict(self.__dict__, value=_picklable(self.value))
        return (type(self), self._constructor_args(), state)


class NotFoundError(AsyncTaskManagerError, LookupError):
    """The requested record does not exist."""

    def __init__(self, entity: str, key: str) -> None:
        self.entity = entity
        self.key = key
        super().__init__(f"{entity} {key!r} not found")

    def _constructor_args(self) -> tuple[Any, ...]:
        return (self.entity, self.key)


class DuplicateError(AsyncTaskManagerError):
    """A record with the same primary key already exists."""

    def __init__(self, entity: str, key: str | None = None) -> None:
        self.entity = entity
        self.key = key
        what = f"{entity} {key!r}" if key is not None else entity
        super().__init__(f"{what} already exists")

    def _constructor_args(self) -> tuple[Any, ...]:
        return (self.entity, self.key)


class IllegalTransitionError(AsyncTaskManagerError):
    """The task's state machine does not allow this transition."""

    def __init__(self, task_id: str, from_status: str, to_status: str) -> None:
        self.task_id = task_id
        self.from_status = from_status
        self.to_status = to_status
        super().__init__(f"task {task_id!r}: {from_status} -> {to_status} is not allowed")

    def _constructor_args(self) -> tuple[Any, ...]:
        return (self.task_id, self.from_status, self.to_status)


class TaskTypeDisabledError(AsyncTaskManagerError):
    """The task type's configuration is disabled, so its tasks are refused."""

    def __init__(self, task_type: str) -> None:
        self.task_type = task_type
        super().__init__(f"task type {task_type!r} is disabled")

    def _constructor_args(self) -> tuple[Any, ...]:
        return (self.task_type,)


class UnknownTaskTypeError(AsyncTaskManagerError):
    """The task type has no TaskConfig; configure it before enqueueing its tasks."""

    def __init__(self, task_type: str) -> None:
        self.task_type = task_type
        super().__init__(f"task type {task_type!r} has no TaskConfig; create one before enqueueing")

    def _constructor_args(self) -> tuple[Any, ...]:
        return (self.task_type,)


class StorageError(AsyncTaskManagerError):
    """The database refused or failed an operation for a reason not covered elsewhere."""


class TransientStorageError(StorageError):
    """A deadlock, lock-wait timeout or lost connection; the whole operation may be retried.

    ``outcome_unknown`` is set when the link broke during COMMIT: the server may have applied
    the transaction. The library does not retry those on its own.
    """

    retryable = True
    outcome_unknown = False


class SchemaOutOfDateError(StorageError):
    """The database's schema is behind (or not managed by) this version of the library.

    ``current`` is the database's revision (None: no version table), ``head`` the library's.
    """

    def __init__(self, current: str | None, head: str | None, message: str | None = None) -> None:
        self.current = current
        self.head = head
        super().__init__(
            message
            or f"the database schema is at {current or 'no revision'}, the library needs {head}"
        )

    def _constructor_args(self) -> tuple[Any, ...]:
        return (self.current, self.head, str(self))


class ConfigurationError(AsyncTaskManagerError):
    """The storage configuration or URL is not usable."""


def _picklable(value: Any) -> Any:
    """``value`` itself when it pickles, else its repr: an error must always travel."""
    try:
        pickle.dumps(value)
    except Exception:
        return repr(value)
    return value
