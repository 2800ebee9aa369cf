"""The repository Protocols (asynctaskmanager.domain.repositories) are true of the SQL
repositories, and the read-only marks sit on exactly the methods that only read.

``storage.tasks.find(...)`` runs in a read-only unit of work because ``find`` is marked with
``@reads`` where it is defined; a read method that loses its mark silently becomes a write
transaction (on SQLite: one that waits for and holds up other writers). No database here.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, Protocol

import pytest

from asynctaskmanager.domain.repositories import (
    Repository,
    TaskConfigRepository,
    TaskLogRepository,
    TaskRepository,
    WorkerRepository,
)
from asynctaskmanager.infrastructure.repositories import (
    SqlTaskConfigRepository,
    SqlTaskLogRepository,
    SqlTaskRepository,
    SqlWorkerRepository,
    TableRepository,
    only_reads,
)

PAIRS = [
    pytest.param(TaskRepository, SqlTaskRepository, id="tasks"),
    pytest.param(TaskConfigRepository, SqlTaskConfigRepository, id="task_configs"),
    pytest.param(TaskLogRepository, SqlTaskLogRepository, id="task_logs"),
    pytest.param(WorkerRepository, SqlWorkerRepository, id="workers"),
]
# The methods that only read, of every repository that has them.
READ_METHODS = frozenset(
    {"find", "get", "list", "list_enabled", "count", "list_for_task", "count_for_task"}
)
# What every repository has, by the Protocol all four extend.
SHARED_METHODS = frozenset({"create", "create_many", "find", "get", "update", "delete"})
# TableRepository's per-table mapping, which a subclass fills in: not part of the Protocol.
MAPPING_HOOKS = frozenset({"values", "from_row"})


def protocol_methods(protocol: type[Any]) -> dict[str, Callable[..., Any]]:
    """The public methods a Protocol declares, its bases' included (nearest first)."""
    methods: dict[str, Callable[..., Any]] = {}
    for kind in protocol.__mro__:
        if kind in (Protocol, object) or not getattr(kind, "_is_protocol", False):
            continue
        for name, value in vars(kind).items():
            if inspect.isfunction(value) and not name.startswith("_"):
                methods.setdefault(name, value)
    return methods


def public_methods(kind: type[Any]) -> set[str]:
    return {
        name
        for name, value in inspect.getmembers(kind, inspect.isfunction)
        if not name.startswith("_")
    }


def shape(method: Callable[..., Any]) -> list[tuple[str, str, bool]]:
    """Each parameter's name, kind, and whether it has a default."""
    return [
        (parameter.name, parameter.kind.name, parameter.default is not inspect.Parameter.empty)
        for parameter in inspect.signature(method).parameters.values()
    ]


@pytest.mark.parametrize(("protocol", "implementation"), PAIRS)
def test_the_sql_repository_has_every_method_of_its_protocol_with_the_same_parameters(
    protocol: type[Any], implementation: type[Any]
) -> None:
    assert Repository in protocol.__mro__
    assert set(protocol_methods(Repository)) == SHARED_METHODS
    declared = protocol_methods(protocol)
    for name, method in declared.items():
        defined = getattr(implementation, name, None)
        assert callable(defined), f"{implementation.__name__} has no {name}"
        assert shape(defined) == shape(method), f"{implementation.__name__}.{name}"


@pytest.mark.parametrize(("protocol", "implementation"), PAIRS)
def test_the_protocol_declares_every_public_method_of_the_sql_repository(
    protocol: type[Any], implementation: type[Any]
) -> None:
    undeclared = public_methods(implementation) - MAPPING_HOOKS - set(protocol_methods(protocol))
    assert undeclared == set(), f"{implementation.__name__} methods missing from {protocol}"
    assert public_methods(TableRepository) >= MAPPING_HOOKS


@pytest.mark.parametrize(("protocol", "implementation"), PAIRS)
def test_exactly_the_methods_that_only_read_are_marked(
    protocol: type[Any], implementation: type[Any]
) -> None:
    methods = set(protocol_methods(protocol))
    marked = {name for name in methods if only_reads(getattr(implementation, name))}
    assert marked == methods & READ_METHODS
    assert {"find", "get"} <= marked
    assert not any(only_reads(getattr(implementation, name)) for name in MAPPING_HOOKS)


def test_a_method_that_loses_its_mark_is_seen() -> None:
    """The check above reads the mark from the method itself: an unmarked copy of a read
    method is not taken for one."""

    class Unmarked(SqlTaskRepository):
        def count(self, *args: Any, **kwargs: Any) -> int:
            return super().count(*args, **kwargs)

    assert only_reads(SqlTaskRepository.count)
    assert not only_reads(Unmarked.count)
