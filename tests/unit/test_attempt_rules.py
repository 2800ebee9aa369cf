"""The queue's pure rules (asynctaskmanager.domain.attempts): what a new task, an ended
attempt and their log rows look like, when a failed attempt runs again, and when a running
task is overdue. No database: the clock is a plain argument.
"""

from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest

from asynctaskmanager import (
    ExecutorType,
    LogType,
    RetryStrategy,
    Task,
    TaskConfig,
    TaskPriority,
    TaskRequest,
    TaskStatus,
    TaskTypeDisabledError,
    UnknownTaskTypeError,
    ValidationError,
)
from asynctaskmanager.domain import attempts, limits
from asynctaskmanager.domain.attempts import (
    RETRY_HORIZON,
    attempt_end_values,
    attempt_log,
    is_overdue,
    new_task,
    retry_at,
)

NOW = datetime(2030, 6, 1, 12, 0, 0, tzinfo=timezone.utc)
# The last instant TIMESTAMP holds: 2038-01-19 03:14:07 UTC.
LAST_INSTANT = datetime(2038, 1, 19, 3, 14, 7, tzinfo=timezone.utc)


def config(
    strategy: RetryStrategy = RetryStrategy.FIXED,
    delay: int = 10,
    *,
    rate: str = "2",
    enabled: bool = True,
) -> TaskConfig:
    return TaskConfig(
        "job",
        "job tasks",
        ExecutorType.FUNCTION,
        strategy,
        default_timeout=45,
        default_max_retry=4,
        retry_delay=delay,
        backoff_rate=Decimal(rate),
        enabled=enabled,
    )


def running(*, retry_count: int = 0, max_retry: int = 3, timeout: int = 30) -> Task:
    return Task(
        "job",
        status=TaskStatus.RUNNING,
        worker_id="w1",
        retry_count=retry_count,
        max_retry=max_retry,
        timeout=timeout,
        started_at=NOW - timedelta(seconds=5),
    )


# --- new_task ------------------------------------------------------------------------------


def test_new_task_takes_the_types_defaults_unless_the_request_gives_its_own() -> None:
    task = new_task(TaskRequest("job", {"n": 1}, priority=TaskPriority.HIGH), config(), NOW)
    assert (task.status, task.timeout, task.max_retry) == (TaskStatus.PENDING, 45, 4)
    assert (task.payload, task.priority, task.retry_count) == ({"n": 1}, TaskPriority.HIGH, 0)
    assert task.created_at == NOW
    assert (task.worker_id, task.started_at, task.completed_at, task.result) == (
        None,
        None,
        None,
        None,
    )
    own = new_task(TaskRequest("job", timeout=9, max_retry=0, task_id="mine"), config(), NOW)
    assert (own.task_id, own.timeout, own.max_retry) == ("mine", 9, 0)


def test_new_task_refuses_an_unknown_or_disabled_type() -> None:
    with pytest.raises(UnknownTaskTypeError) as unknown:
        new_task(TaskRequest("job"), None, NOW)
    assert unknown.value.task_type == "job"
    with pytest.raises(TaskTypeDisabledError):
        new_task(TaskRequest("job"), config(enabled=False), NOW)


def test_new_task_schedules_a_delay_from_now_in_whole_seconds() -> None:
    now = NOW.replace(microsecond=700_000)
    task = new_task(
        TaskRequest("job", delay=timedelta(seconds=30, microseconds=600_000)), config(), now
    )
    assert task.scheduled_at == NOW + timedelta(seconds=31)
    at = NOW + timedelta(days=2)
    assert new_task(TaskRequest("job", scheduled_at=at), config(), NOW).scheduled_at == at
    assert new_task(TaskRequest("job"), config(), NOW).scheduled_at is None


def test_new_task_refuses_a_delay_that_ends_after_the_last_timestamp() -> None:
    almost = LAST_INSTANT - timedelta(seconds=10)
    fits = new_task(TaskRequest("job", delay=timedelta(seconds=10)), config(), almost)
    assert fits.scheduled_at == LAST_INSTANT
    with pytest.raises(ValidationError) as refused:
        new_task(TaskRequest("job", delay=timedelta(seconds=11)), config(), almost)
    assert refused.value.field == "delay"


def test_new_task_checks_a_payload_changed_after_the_request_was_made() -> None:
    request = TaskRequest("job", {"n": 1})
    request.payload["bad"] = float("nan")
    with pytest.raises(ValidationError) as refused:
        new_task(request, config(), NOW)
    assert refused.value.field == "payload"


# --- retry_at ------------------------------------------------------------------------------


def test_no_retry_once_the_retries_are_used_up() -> None:
    assert (
        retry_at(running(retry_count=3, max_retry=3), config(), NOW, max_delay=60, jitter=0) is None
    )
    assert retry_at(running(max_retry=0), config(), NOW, max_delay=60, jitter=0) is None
    assert retry_at(running(retry_count=2, max_retry=3), config(), NOW, max_delay=60, jitter=0) == (
        NOW + timedelta(seconds=10)
    )


def test_a_task_whose_type_lost_its_config_is_retried_at_once() -> None:
    assert retry_at(running(), None, NOW, max_delay=60, jitter=0.5) == NOW


@pytest.mark.parametrize(
    ("strategy", "retry_count", "seconds"),
    [
        (RetryStrategy.FIXED, 0, 10),
        (RetryStrategy.FIXED, 2, 10),
        (RetryStrategy.LINEAR, 0, 10),
        (RetryStrategy.LINEAR, 2, 30),
        (RetryStrategy.EXPONENTIAL, 0, 10),
        (RetryStrategy.EXPONENTIAL, 2, 40),
        (RetryStrategy.EXPONENTIAL, 4, 100),  # 160, capped at max_delay
    ],
)
def test_retry_lands_after_the_configured_back_off(
    strategy: RetryStrategy, retry_count: int, seconds: int
) -> None:
    task = running(retry_count=retry_count, max_retry=10)
    when = retry_at(task, config(strategy), NOW, max_delay=100, jitter=0)
    assert when == NOW + timedelta(seconds=seconds)


def test_jitter_takes_off_up_to_its_fraction() -> None:
    rng = random.Random(7)
    delays = {
        retry_at(running(), config(delay=1000), NOW, max_delay=3600, jitter=0.5, rng=rng)
        for _ in range(50)
    }
    assert all(when is not None for when in delays)
    seconds = {(when - NOW).total_seconds() for when in delays if when is not None}
    assert min(seconds) >= 500 and max(seconds) <= 1000
    assert len(seconds) > 10  # the jitter really varies the delay


def test_a_back_off_landing_after_the_last_timestamp_fails_for_good() -> None:
    """2038-01-19 03:14:07 UTC is the last instant a TIMESTAMP holds: a retry that would land
    after it cannot be stored, so the attempt is not retried."""
    assert RETRY_HORIZON == LAST_INSTANT == limits.TIMESTAMP_MAX
    ten_before = LAST_INSTANT - timedelta(seconds=10)
    lands_on_it = retry_at(running(), config(delay=10), ten_before, max_delay=60, jitter=0)
    assert lands_on_it == LAST_INSTANT
    assert retry_at(running(), config(delay=11), ten_before, max_delay=60, jitter=0) is None
    a_year = int(timedelta(days=365).total_seconds())
    late = datetime(2037, 6, 1, tzinfo=timezone.utc)
    assert retry_at(running(), config(delay=a_year), late, max_delay=a_year, jitter=0) is None
    # The cap decides where the retry lands: capped, it lands in range again.
    assert retry_at(running(), config(delay=a_year), late, max_delay=60, jitter=0) == (
        late + timedelta(seconds=60)
    )


def test_the_horizon_is_read_when_the_retry_is_computed(monkeypatch: pytest.MonkeyPatch) -> None:
    """The contract tests move the horizon near to the database's clock: retry_at must read
    the module's value at call time."""
    monkeypatch.setattr(attempts, "RETRY_HORIZON", NOW + timedelta(seconds=5))
    assert retry_at(running(), config(delay=5), NOW, max_delay=60, jitter=0) == (
        NOW + timedelta(seconds=5)
    )
    assert retry_at(running(), config(delay=6), NOW, max_delay=60, jitter=0) is None


# --- attempt_end_values and attempt_log ----------------------------------------------------


def test_a_retried_attempt_goes_back_to_pending_without_its_worker() -> None:
    task = running(retry_count=1)
    when = NOW + timedelta(seconds=10)
    assert attempt_end_values(task, "boom", when, NOW) == {
        "status": "pending",
        "retry_count": 2,
        "scheduled_at": when,
        "worker_id": None,
        "started_at": None,
        "error_message": "boom",
    }


def test_an_attempt_without_a_retry_fails_for_good_now() -> None:
    assert attempt_end_values(running(retry_count=1), "boom", None, NOW) == {
        "status": "failed",
        "error_message": "boom",
        "completed_at": NOW,
    }


def test_the_log_of_a_retried_failure_schedules_the_retry() -> None:
    task = running(retry_count=1)
    when = NOW + timedelta(seconds=10)
    log = attempt_log(task, when, "boom", LogType.FAILED)
    assert (log.task_id, log.log_type) == (task.task_id, LogType.RETRY_SCHEDULED)
    assert (log.from_status, log.to_status, log.message) == (
        TaskStatus.RUNNING,
        TaskStatus.PENDING,
        "boom",
    )
    assert log.details == {"worker_id": "w1", "attempt": 2, "retry_at": when.isoformat()}
    assert log.log_id and log.created_at is None  # the database stamps it


def test_the_log_of_a_final_failure() -> None:
    log = attempt_log(running(), None, "boom", LogType.FAILED)
    assert (log.log_type, log.from_status, log.to_status) == (
        LogType.FAILED,
        TaskStatus.RUNNING,
        TaskStatus.FAILED,
    )
    assert log.details == {"worker_id": "w1", "attempt": 1}


@pytest.mark.parametrize(
    ("when", "to_status"),
    [(NOW + timedelta(seconds=10), TaskStatus.PENDING), (None, TaskStatus.FAILED)],
)
def test_a_rescue_is_logged_as_a_rescue(when: datetime | None, to_status: TaskStatus) -> None:
    log = attempt_log(running(), when, "worker lost", LogType.RESCUED)
    assert (log.log_type, log.from_status, log.to_status, log.message) == (
        LogType.RESCUED,
        TaskStatus.RUNNING,
        to_status,
        "worker lost",
    )
    assert ("retry_at" in log.details) is (when is not None)


def test_two_logs_of_one_attempt_get_their_own_ids() -> None:
    task = running()
    first = attempt_log(task, None, "a", LogType.FAILED)
    second = attempt_log(task, None, "a", LogType.FAILED)
    assert first.log_id != second.log_id


# --- is_overdue ----------------------------------------------------------------------------


def test_a_task_is_overdue_only_after_its_timeout_and_the_grace() -> None:
    task = running(timeout=30)
    assert task.started_at is not None
    deadline = task.started_at + timedelta(seconds=30)
    assert not is_overdue(task, deadline, timedelta(0))
    assert is_overdue(task, deadline + timedelta(microseconds=1), timedelta(0))
    grace = timedelta(seconds=15)
    assert not is_overdue(task, deadline + grace, grace)
    assert is_overdue(task, deadline + grace + timedelta(seconds=1), grace)


def test_a_task_that_never_started_is_never_overdue() -> None:
    pending = Task("job", timeout=1)
    assert not is_overdue(pending, NOW + timedelta(days=365), timedelta(0))
