"""Leases: one holder at a time, renewal, expiry, release, on every backend."""

from __future__ import annotations

import threading
import time
from datetime import timedelta

import pytest

from asynctaskmanager import Storage, ValidationError, open_storage

TTL = timedelta(seconds=1)


def test_one_holder_at_a_time_and_renewal(storage: Storage) -> None:
    leases = storage.leases
    assert leases.holder("sweep") is None
    assert leases.acquire("sweep", "worker-a", timedelta(seconds=30))
    assert not leases.acquire("sweep", "worker-b", timedelta(seconds=30))
    assert leases.acquire("sweep", "worker-a", timedelta(seconds=30))  # renewed
    assert leases.holder("sweep") == "worker-a"
    # Another name is another lease; holders compare exactly.
    assert leases.acquire("other", "worker-b", timedelta(seconds=30))
    assert not leases.acquire("sweep", "WORKER-A", timedelta(seconds=30))


def test_release_hands_it_over_and_only_by_its_holder(storage: Storage) -> None:
    leases = storage.leases
    assert leases.acquire("sweep", "worker-a", timedelta(seconds=30))
    assert not leases.release("sweep", "worker-b")
    assert not leases.acquire("sweep", "worker-b", timedelta(seconds=30))
    assert leases.release("sweep", "worker-a")
    assert leases.holder("sweep") is None
    assert leases.acquire("sweep", "worker-b", timedelta(seconds=30))
    assert not leases.release("sweep", "worker-a")


def test_expiry_hands_it_over(storage: Storage) -> None:
    leases = storage.leases
    assert leases.acquire("sweep", "worker-a", TTL)
    assert not leases.acquire("sweep", "worker-b", TTL)
    # Whole seconds: expired once the clock is past expires_at, at most ttl + 1 s later.
    deadline = time.monotonic() + 5
    while not leases.acquire("sweep", "worker-b", TTL):
        assert time.monotonic() < deadline, "the expired lease was not handed over"
        time.sleep(0.2)
    assert leases.holder("sweep") == "worker-b"
    assert not leases.acquire("sweep", "worker-a", timedelta(seconds=30))


def test_contenders_never_hold_it_together(storage: Storage) -> None:
    """Threads (on their own connections where the backend has several) race for the lease
    over and over; the holder drops it at the end of each turn. At no moment do two of them
    believe they hold it."""
    url = storage.engine.url
    holders: list[str] = []
    inside: list[str] = []
    overlaps: list[tuple[str, str]] = []
    lock = threading.Lock()
    errors: list[BaseException] = []

    def contend(name: str) -> None:
        own = storage if storage.backend == "memory" else open_storage(url)
        leases = own.leases
        try:
            for _ in range(15):
                if not leases.acquire("race", name, timedelta(seconds=30)):
                    time.sleep(0.005)
                    continue
                with lock:
                    if inside:
                        overlaps.append((inside[0], name))
                    inside.append(name)
                    holders.append(name)
                time.sleep(0.01)
                with lock:
                    inside.remove(name)
                assert leases.release("race", name)
        except BaseException as error:
            errors.append(error)
        finally:
            if own is not storage:
                own.close()

    threads = [threading.Thread(target=contend, args=(f"worker-{i}",)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert overlaps == []
    assert len(holders) >= 4  # the lease did change hands


@pytest.mark.parametrize("ttl", [timedelta(0), timedelta(milliseconds=500), timedelta(days=2), 30])
def test_bad_ttl_is_refused(storage: Storage, ttl: object) -> None:
    with pytest.raises(ValidationError) as caught:
        storage.leases.acquire("sweep", "worker-a", ttl)  # type: ignore[arg-type]
    assert caught.value.field == "ttl"


def test_bad_names_are_refused(storage: Storage) -> None:
    with pytest.raises(ValidationError):
        storage.leases.acquire("", "worker-a", TTL)
    with pytest.raises(ValidationError):
        storage.leases.release("sweep", "x" * 65)
