"""SQLite and memory do not partition: every partitions call says so with ConfigurationError."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from asynctaskmanager import ConfigurationError, Storage
from asynctaskmanager.partitions import disable, enable, partition_status, rotate
from asynctaskmanager.partitions.catalogue import is_partitioned

CALLS: list[Callable[[Storage], object]] = [enable, disable, partition_status, rotate]


@pytest.mark.parametrize("call", CALLS, ids=lambda call: call.__name__)
@pytest.mark.parametrize("backend", ["memory", "sqlite"])  # first in the id, as CI counts
def test_the_embedded_backends_refuse_to_partition(
    backend: str, call: Callable[[Storage], object], request: pytest.FixtureRequest
) -> None:
    storage: Storage = request.getfixturevalue(f"{backend}_storage")
    with pytest.raises(ConfigurationError, match=f"{backend} does not partition"):
        call(storage)


@pytest.mark.parametrize("backend", ["memory", "sqlite"])
def test_prune_treats_the_embedded_backends_as_unpartitioned(
    backend: str, request: pytest.FixtureRequest
) -> None:
    storage: Storage = request.getfixturevalue(f"{backend}_storage")
    assert is_partitioned(storage.engine) is False
