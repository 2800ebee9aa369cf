"""Every library error crosses a process boundary with its fields: a multiprocessing.Pool
worker that raises one hands the same error, fields and all, to the parent."""

from __future__ import annotations

import multiprocessing
import pickle
from typing import Any

import pytest

import asynctaskmanager.errors as errors_module
from asynctaskmanager.errors import (
    AsyncTaskManagerError,
    ConfigurationError,
    DuplicateError,
    IllegalTransitionError,
    NotFoundError,
    SchemaOutOfDateError,
    StorageError,
    TaskTypeDisabledError,
    TransientStorageError,
    UnknownTaskTypeError,
    ValidationError,
)


def _transient_with_unknown_outcome() -> TransientStorageError:
    error = TransientStorageError("link lost during COMMIT")
    error.outcome_unknown = True
    return error


# One instance of each class, built in the worker from its index.
SAMPLES: list[Any] = [
    lambda: AsyncTaskManagerError("base"),
    lambda: ValidationError("priority", "must be a TaskPriority", 99),
    lambda: NotFoundError("task", "t-1"),
    lambda: DuplicateError("task", "t-1"),
    lambda: DuplicateError("task"),
    lambda: IllegalTransitionError("t-1", "completed", "running"),
    lambda: TaskTypeDisabledError("email"),
    lambda: UnknownTaskTypeError("sms"),
    lambda: StorageError("database error: boom"),
    _transient_with_unknown_outcome,
    lambda: SchemaOutOfDateError("0002", "0004", "run asynctaskmanager upgrade"),
    lambda: ConfigurationError("not a database URL: 'x'"),
]


def _raise_sample(index: int) -> None:
    raise SAMPLES[index]()


def _fields(error: BaseException) -> tuple[type, tuple[Any, ...], dict[str, Any]]:
    return type(error), error.args, dict(error.__dict__)


def test_every_error_class_has_a_sample() -> None:
    classes = {
        value
        for value in vars(errors_module).values()
        if isinstance(value, type) and issubclass(value, AsyncTaskManagerError)
    }
    assert classes == {type(sample()) for sample in SAMPLES}


@pytest.mark.parametrize("index", range(len(SAMPLES)))
def test_pickles_with_its_fields(index: int) -> None:
    original = SAMPLES[index]()
    copy = pickle.loads(pickle.dumps(original))
    assert _fields(copy) == _fields(original)
    assert str(copy) == str(original)


def test_an_unpicklable_value_travels_as_its_repr() -> None:
    error = ValidationError("callback", "must be a name", lambda: None)
    copy = pickle.loads(pickle.dumps(error))
    assert copy.field == "callback" and copy.limit == "must be a name"
    assert isinstance(copy.value, str) and copy.value.startswith("<function")


def test_a_pool_worker_raising_each_error_hands_it_back() -> None:
    context = multiprocessing.get_context("spawn")
    with context.Pool(2) as pool:
        pending = [pool.apply_async(_raise_sample, (index,)) for index in range(len(SAMPLES))]
        for index, result in enumerate(pending):
            expected = SAMPLES[index]()
            with pytest.raises(type(expected)) as raised:
                # A class that does not unpickle makes the pool hang: a timeout says so.
                result.get(timeout=60)
            assert _fields(raised.value) == _fields(expected)
