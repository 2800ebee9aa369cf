"""The shape of a dialect profile, shared by every dialect module."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy import URL, Connection, Engine, Executable
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DBAPIError

# A Connection execution option: this unit of work only reads (see dialects.sqlite).
READ_ONLY = "asynctaskmanager_read_only"
# Set in a pooled connection's info while its session waits for the cluster on reads
# (DialectProfile.sync_wait): the dialect module ends that when the connection is returned.
SYNC_WAIT_SET = "asynctaskmanager.sync_wait_set"


@dataclass(frozen=True)
class ErrorKind:
    """What a driver error means to the library. ``key``: the duplicate key, where the driver
    names it.

    ``rolled_back``: the server rolled the whole transaction back (a deadlock, a certification
    conflict on a cluster), so even at COMMIT its outcome is known: nothing was applied, and
    the unit of work may simply run again.
    """

    duplicate: bool = False
    transient: bool = False
    bad_value: bool = False
    key: str | None = None
    rolled_back: bool = False


class WorkListener(Protocol):
    """A connection of its own that waits for the work channel's notifications."""

    def wait(self, timeout: float) -> list[str]:
        """The task types notified within ``timeout`` seconds (empty if none). Raises the
        driver's error when the connection is lost."""
        ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class WorkChannel:
    """Where the server can wake idle workers (PostgreSQL's LISTEN/NOTIFY).

    ``notify(connection, task_types)`` runs inside an enqueue's transaction: the server
    delivers it only if that transaction commits. ``listen(engine)`` opens a listener.
    """

    notify: Callable[[Connection, Sequence[str]], None]
    listen: Callable[[Engine], WorkListener]


@dataclass(frozen=True)
class ClusterInfo:
    """Whether the server is one node of a synchronous multi-primary cluster (MariaDB Galera),
    as it said itself at the engine's first connection: never configured by hand.

    On a cluster row locks are node-local and a transaction may lose certification at COMMIT,
    so the queue serialises a type's claimers by a write and retries conflicts longer.
    """

    galera: bool = False

    @property
    def is_cluster(self) -> bool:
        return self.galera


NOT_A_CLUSTER = ClusterInfo()


def _no_cluster(_engine: Engine) -> ClusterInfo:
    return NOT_A_CLUSTER


@dataclass(frozen=True)
class DialectProfile:
    """One backend's differences.

    ``single_writer``: one writer at a time (SQLite): a thread may not open a unit of work
    inside its own. ``serialise_writers``: every unit of work shares one connection (SQLite
    in memory), so the storage holds a lock around each. ``ephemeral``: the database lives
    and dies with its engine, so a storage migrates it when it opens. ``work_channel``: how
    the server wakes idle workers, where it can (elsewhere they poll).
    """

    name: str
    engine_options: Callable[[URL], dict[str, Any]]
    configure: Callable[[Engine], None]
    classify: Callable[[DBAPIError], ErrorKind]
    supports_skip_locked: Callable[[Dialect], bool]
    # The guarded upsert of a lease row (see infrastructure/leases.py): insert ``values``,
    # or overwrite the row only where it is free for their holder by ``now``.
    take_lease: Callable[[dict[str, Any], datetime], Executable]
    # What the server said about being a cluster node (asks it at the first connection).
    cluster: Callable[[Engine], ClusterInfo] = _no_cluster
    # Statements that make a session's reads wait until the node has applied every commit
    # the cluster made before them, and that end that; None where every read already does.
    sync_wait: tuple[str, str] | None = None
    single_writer: bool = False
    serialise_writers: bool = False
    ephemeral: bool = False
    driver_hint: str = ""
    work_channel: WorkChannel | None = None
