"""Bad input is refused on construction, with a ValidationError that names the field.

No database here: tests/contract/test_stored_validation.py holds the same limits against
every backend.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from decimal import Decimal
from functools import partial
from typing import Any

import pytest

from asynctaskmanager import (
    ExecutorType,
    LogType,
    MySQLConfig,
    PostgresConfig,
    Task,
    TaskConfig,
    TaskLog,
    TaskRequest,
    ValidationError,
    Worker,
)
from asynctaskmanager.domain import limits
from tests.support.values import (
    AFTER_2038,
    AFTER_2038_PLUS8,
    BEFORE_1970,
    EPOCH,
    LONE_SURROGATE,
    NAIVE,
    UTC,
    accepts_payload,
    nested,
)


def too_large_json() -> Any:
    return {"blob": "x" * limits.JSON_MAX_BYTES}


def too_long_text() -> str:
    # Under the limit in characters, over it in UTF-8 bytes (3 bytes each).
    return "汉" * (limits.TEXT_MAX_BYTES // 3 + 1)


class NotJson:
    pass


BAD_IDS: list[tuple[str, object]] = [
    ("empty", ""),
    ("65-chars", "x" * (limits.ID_MAX + 1)),
    ("int", 123),
    ("none", None),
    ("bytes", b"abc"),
    ("leading-space", " abc"),
    ("trailing-space", "abc "),
    ("trailing-tab", "abc\t"),
    ("control-char", "a\x00b"),
]

BAD_JSON: list[tuple[str, Callable[[], object]]] = [
    ("nan", lambda: {"x": float("nan")}),
    ("inf", lambda: [1.0, float("inf")]),
    ("-inf", lambda: float("-inf")),
    ("object", lambda: {"x": NotJson()}),
    ("set", lambda: {"x": {1, 2}}),
    ("tuple", lambda: (1, 2)),
    ("bytes", lambda: {"x": b"raw"}),
    ("decimal", lambda: {"x": Decimal("1.5")}),
    ("datetime", lambda: {"at": datetime(2024, 1, 1, tzinfo=UTC)}),
    ("int-key", lambda: {1: "a"}),
    ("none-key", lambda: {None: "a"}),
    ("too-deep", lambda: nested(limits.JSON_MAX_DEPTH + 5)),
    ("too-large", too_large_json),
    ("surrogate-value", lambda: {"x": LONE_SURROGATE}),
    ("surrogate-key", lambda: {LONE_SURROGATE: 1}),
]

BAD_TIMES: list[tuple[str, object]] = [
    ("naive", NAIVE),
    ("before-1970", BEFORE_1970),
    ("epoch", EPOCH),
    ("after-2038", AFTER_2038),
    ("after-2038-in-plus8", AFTER_2038_PLUS8),
    ("string", "2024-01-01T00:00:00Z"),
    ("epoch-seconds", 1_700_000_000),
]

BAD_INTS: list[tuple[str, object]] = [
    ("bool", True),
    ("float", 3.0),
    ("string", "3"),
    ("too-big", limits.INT_MAX + 1),
    ("none", None),
]


def composed(build: Callable[[object], object], make: Callable[[], object]) -> Callable[[], object]:
    return lambda: build(make())


def cases() -> Iterator[Any]:
    """(constructor, expected field) for every kind of bad input on every entity."""

    def case(name: str, build: Callable[[], object], field: str) -> Any:
        return pytest.param(build, field, id=name)

    # --- ids, on every entity and request; (field, optional, constructor)
    id_fields: list[tuple[str, bool, Callable[[object], object]]] = [
        ("task_id", False, lambda v: Task("email", task_id=v)),  # type: ignore[arg-type]
        ("task_type", False, lambda v: Task(v)),  # type: ignore[arg-type]
        ("worker_id", True, lambda v: Task("email", worker_id=v)),  # type: ignore[arg-type]
        ("task_type", False, lambda v: TaskConfig(v, "n", ExecutorType.HTTP)),  # type: ignore[arg-type]
        ("log_id", False, lambda v: TaskLog("t", LogType.INFO, log_id=v)),  # type: ignore[arg-type]
        ("task_id", False, lambda v: TaskLog(v, LogType.INFO)),  # type: ignore[arg-type]
        ("worker_id", False, lambda v: Worker(v, "n", "h:1")),  # type: ignore[arg-type]
        ("task_id", False, lambda v: TaskRequest("email", task_id=v)),  # type: ignore[arg-type]
        ("task_type", False, lambda v: TaskRequest(v)),  # type: ignore[arg-type]
    ]
    for index, (field, optional, build) in enumerate(id_fields):
        for name, bad in BAD_IDS:
            if bad is None and optional:
                continue
            yield case(f"id{index}-{field}-{name}", partial(build, bad), field)

    # --- enums
    enum_cases: list[tuple[str, Callable[[], object], str]] = [
        ("task-status", lambda: Task("e", status="done"), "status"),  # type: ignore[arg-type]
        ("task-status-case", lambda: Task("e", status="PENDING"), "status"),  # type: ignore[arg-type]
        ("task-status-int", lambda: Task("e", status=1), "status"),  # type: ignore[arg-type]
        ("task-priority", lambda: Task("e", priority=9), "priority"),  # type: ignore[arg-type]
        ("task-priority-neg", lambda: Task("e", priority=-1), "priority"),  # type: ignore[arg-type]
        ("task-priority-bool", lambda: Task("e", priority=True), "priority"),  # type: ignore[arg-type]
        ("task-priority-float", lambda: Task("e", priority=1.0), "priority"),  # type: ignore[arg-type]
        ("task-priority-str", lambda: Task("e", priority="high"), "priority"),  # type: ignore[arg-type]
        (
            "config-executor",
            lambda: TaskConfig("e", "n", "ftp"),  # type: ignore[arg-type]
            "executor_type",
        ),
        (
            "config-strategy",
            lambda: TaskConfig("e", "n", ExecutorType.HTTP, "random"),  # type: ignore[arg-type]
            "retry_strategy",
        ),
        ("log-type", lambda: TaskLog("t", "oops"), "log_type"),  # type: ignore[arg-type]
        (
            "log-from",
            lambda: TaskLog("t", LogType.INFO, from_status="x"),  # type: ignore[arg-type]
            "from_status",
        ),
        (
            "log-to",
            lambda: TaskLog("t", LogType.INFO, to_status=""),  # type: ignore[arg-type]
            "to_status",
        ),
        ("worker-status", lambda: Worker("w", "n", "h", status="busy"), "status"),  # type: ignore[arg-type]
        ("request-priority", lambda: TaskRequest("e", priority=4), "priority"),  # type: ignore[arg-type]
        (
            "request-priority-bool",
            lambda: TaskRequest("e", priority=False),  # type: ignore[arg-type]
            "priority",
        ),
    ]
    for name, build_enum, field in enum_cases:
        yield case(name, build_enum, field)

    # --- integers: wrong type, out of range, negative; (field, minimum, optional, constructor)
    int_fields: list[tuple[str, int, bool, Callable[[object], object]]] = [
        ("retry_count", 0, False, lambda v: Task("e", retry_count=v)),  # type: ignore[arg-type]
        ("max_retry", 0, False, lambda v: Task("e", max_retry=v)),  # type: ignore[arg-type]
        ("timeout", 1, False, lambda v: Task("e", timeout=v)),  # type: ignore[arg-type]
        (
            "default_timeout",
            1,
            False,
            lambda v: TaskConfig("e", "n", ExecutorType.HTTP, default_timeout=v),  # type: ignore[arg-type]
        ),
        (
            "default_max_retry",
            0,
            False,
            lambda v: TaskConfig("e", "n", ExecutorType.HTTP, default_max_retry=v),  # type: ignore[arg-type]
        ),
        (
            "retry_delay",
            0,
            False,
            lambda v: TaskConfig("e", "n", ExecutorType.HTTP, retry_delay=v),  # type: ignore[arg-type]
        ),
        (
            "max_concurrent",
            1,
            False,
            lambda v: TaskConfig("e", "n", ExecutorType.HTTP, max_concurrent=v),  # type: ignore[arg-type]
        ),
        ("capacity", 1, False, lambda v: Worker("w", "n", "h", capacity=v)),  # type: ignore[arg-type]
        ("current_load", 0, False, lambda v: Worker("w", "n", "h", current_load=v)),  # type: ignore[arg-type]
        ("timeout", 1, True, lambda v: TaskRequest("e", timeout=v)),  # type: ignore[arg-type]
        ("max_retry", 0, True, lambda v: TaskRequest("e", max_retry=v)),  # type: ignore[arg-type]
    ]
    for index, (field, minimum, optional, build_int) in enumerate(int_fields):
        bad_values = [
            *BAD_INTS,
            ("below-minimum", minimum - 1),
            ("below-int-min", limits.INT_MIN - 1),
        ]
        for name, bad in bad_values:
            if bad is None and optional:
                continue
            yield case(f"int{index}-{field}-{name}", partial(build_int, bad), field)

    # --- timestamps
    time_fields: list[tuple[str, Callable[[object], object]]] = [
        ("created_at", lambda v: Task("e", created_at=v)),  # type: ignore[arg-type]
        ("scheduled_at", lambda v: Task("e", scheduled_at=v)),  # type: ignore[arg-type]
        ("started_at", lambda v: Task("e", started_at=v)),  # type: ignore[arg-type]
        ("completed_at", lambda v: Task("e", completed_at=v)),  # type: ignore[arg-type]
        (
            "created_at",
            lambda v: TaskConfig("e", "n", ExecutorType.HTTP, created_at=v),  # type: ignore[arg-type]
        ),
        (
            "updated_at",
            lambda v: TaskConfig("e", "n", ExecutorType.HTTP, updated_at=v),  # type: ignore[arg-type]
        ),
        ("created_at", lambda v: TaskLog("t", LogType.INFO, created_at=v)),  # type: ignore[arg-type]
        ("last_heartbeat", lambda v: Worker("w", "n", "h", last_heartbeat=v)),  # type: ignore[arg-type]
        ("scheduled_at", lambda v: TaskRequest("e", scheduled_at=v)),  # type: ignore[arg-type]
    ]
    for index, (field, build_time) in enumerate(time_fields):
        for name, bad in BAD_TIMES:
            yield case(f"time{index}-{field}-{name}", partial(build_time, bad), field)

    # --- JSON documents
    json_fields: list[tuple[str, Callable[[object], object]]] = [
        ("payload", lambda v: Task("e", payload=v)),
        ("result", lambda v: Task("e", result=v)),
        ("executor_config", lambda v: TaskConfig("e", "n", ExecutorType.HTTP, executor_config=v)),
        ("details", lambda v: TaskLog("t", LogType.INFO, details=v)),
        ("payload", lambda v: TaskRequest("e", payload=v)),
    ]
    for index, (field, build_json) in enumerate(json_fields):
        for name, make in BAD_JSON:
            yield case(f"json{index}-{field}-{name}", composed(build_json, make), field)

    # --- TEXT and VARCHAR
    text_cases: list[tuple[str, Callable[[], object], str]] = [
        ("error-too-long", lambda: Task("e", error_message=too_long_text()), "error_message"),
        ("error-surrogate", lambda: Task("e", error_message=LONE_SURROGATE), "error_message"),
        ("error-not-str", lambda: Task("e", error_message=42), "error_message"),  # type: ignore[arg-type]
        (
            "description-too-long",
            lambda: TaskConfig("e", "n", ExecutorType.HTTP, description=too_long_text()),
            "description",
        ),
        (
            "description-surrogate",
            lambda: TaskConfig("e", "n", ExecutorType.HTTP, description=LONE_SURROGATE),
            "description",
        ),
        (
            "message-too-long",
            lambda: TaskLog("t", LogType.INFO, message=too_long_text()),
            "message",
        ),
        (
            "message-surrogate",
            lambda: TaskLog("t", LogType.INFO, message=LONE_SURROGATE),
            "message",
        ),
        ("task-name-empty", lambda: TaskConfig("e", "", ExecutorType.HTTP), "task_name"),
        ("task-name-blank", lambda: TaskConfig("e", "   ", ExecutorType.HTTP), "task_name"),
        (
            "task-name-129",
            lambda: TaskConfig("e", "名" * (limits.NAME_MAX + 1), ExecutorType.HTTP),
            "task_name",
        ),
        (
            "task-name-surrogate",
            lambda: TaskConfig("e", LONE_SURROGATE, ExecutorType.HTTP),
            "task_name",
        ),
        ("task-name-none", lambda: TaskConfig("e", None, ExecutorType.HTTP), "task_name"),  # type: ignore[arg-type]
        ("worker-name-empty", lambda: Worker("w", "", "h"), "worker_name"),
        ("worker-name-129", lambda: Worker("w", "n" * (limits.NAME_MAX + 1), "h"), "worker_name"),
        ("address-empty", lambda: Worker("w", "n", ""), "address"),
        ("address-257", lambda: Worker("w", "n", "a" * (limits.ADDRESS_MAX + 1)), "address"),
        ("address-int", lambda: Worker("w", "n", 8080), "address"),  # type: ignore[arg-type]
    ]
    for name, build_text, field in text_cases:
        yield case(name, build_text, field)

    # --- the rest: DECIMAL(10,2), BOOLEAN, lists, delays
    def config(**changes: Any) -> Callable[[], object]:
        return lambda: TaskConfig("e", "n", ExecutorType.HTTP, **changes)

    other_cases: list[tuple[str, Callable[[], object], str]] = [
        ("backoff-3-decimals", config(backoff_rate=Decimal("1.234")), "backoff_rate"),
        ("backoff-3-decimals-float", config(backoff_rate=2.005), "backoff_rate"),
        ("backoff-3-decimals-str", config(backoff_rate="1.001"), "backoff_rate"),
        ("backoff-below-1", config(backoff_rate=Decimal("0.99")), "backoff_rate"),
        ("backoff-too-big", config(backoff_rate=Decimal("100000000")), "backoff_rate"),
        ("backoff-nan", config(backoff_rate=Decimal("NaN")), "backoff_rate"),
        ("backoff-inf", config(backoff_rate=float("inf")), "backoff_rate"),
        ("backoff-bool", config(backoff_rate=True), "backoff_rate"),
        ("backoff-text", config(backoff_rate="fast"), "backoff_rate"),
        ("backoff-none", config(backoff_rate=None), "backoff_rate"),
        ("enabled-int", config(enabled=1), "enabled"),
        ("enabled-str", config(enabled="true"), "enabled"),
        ("enabled-none", config(enabled=None), "enabled"),
        (
            "supported-types-str",
            lambda: Worker("w", "n", "h", supported_types="email"),  # type: ignore[arg-type]
            "supported_types",
        ),
        (
            "supported-types-bad-item",
            lambda: Worker("w", "n", "h", supported_types=["email", " sms"]),
            "supported_types[1]",
        ),
        (
            "supported-types-long-item",
            lambda: Worker("w", "n", "h", supported_types=["x" * 65]),
            "supported_types[0]",
        ),
        ("delay-negative", lambda: TaskRequest("e", delay=timedelta(seconds=-1)), "delay"),
        ("delay-seconds", lambda: TaskRequest("e", delay=5), "delay"),  # type: ignore[arg-type]
        (
            "delay-and-scheduled",
            lambda: TaskRequest(
                "e", delay=timedelta(seconds=5), scheduled_at=datetime(2030, 1, 1, tzinfo=UTC)
            ),
            "delay",
        ),
    ]
    for name, build_other, field in other_cases:
        yield case(name, build_other, field)


@pytest.mark.parametrize(("build", "field"), list(cases()))
def test_bad_input_names_the_field(build: Callable[[], object], field: str) -> None:
    with pytest.raises(ValidationError) as raised:
        build()
    error = raised.value
    assert error.field == field
    assert isinstance(error, ValueError)
    assert error.limit and error.limit in str(error)
    assert str(error).startswith(f"{field}: ")


def test_replace_validates_again() -> None:
    task = Task("email", task_id="t1")
    with pytest.raises(ValidationError) as raised:
        dataclasses.replace(task, timeout=0)
    assert raised.value.field == "timeout"


def test_good_boundaries_are_accepted() -> None:
    """The values just inside each limit pass, so the refusals above are about the limit."""
    Task(
        "t" * limits.ID_MAX,
        task_id="i" * limits.ID_MAX,
        timeout=limits.INT_MAX,
        retry_count=0,
        error_message="汉" * (limits.TEXT_MAX_BYTES // 3),
        created_at=limits.TIMESTAMP_MIN,
        completed_at=limits.TIMESTAMP_MAX,
        payload={"blob": "x" * (limits.JSON_MAX_BYTES - 100)},
    )
    config = TaskConfig(
        "e", "名" * limits.NAME_MAX, ExecutorType.HTTP, backoff_rate=Decimal("99999999.99")
    )
    assert config.backoff_rate == Decimal("99999999.99")
    assert TaskConfig("e", "n", ExecutorType.HTTP, backoff_rate=1.5).backoff_rate == Decimal(  # type: ignore[arg-type]
        "1.50"
    )
    assert TaskConfig("e", "n", "grpc").executor_type is ExecutorType.GRPC  # type: ignore[arg-type]
    assert Task("e", priority=3, status="running").priority == 3  # type: ignore[arg-type]
    Worker("w", "n", "a" * limits.ADDRESS_MAX, supported_types=())  # type: ignore[arg-type]


def test_json_depth_boundary_is_the_limit() -> None:
    deepest = max(d for d in range(1, limits.JSON_MAX_DEPTH + 3) if accepts_payload(nested(d)))
    assert deepest <= limits.JSON_MAX_DEPTH
    assert deepest >= limits.JSON_MAX_DEPTH - 1  # the limit is not needlessly tight
    with pytest.raises(ValidationError) as raised:
        Task("e", payload=nested(deepest + 1))
    assert raised.value.field == "payload"
    # Depth does not depend on where the deep branch sits.
    assert accepts_payload({"a": 1, "b": [2, {"c": nested(deepest - 3)}]})
    assert not accepts_payload({"a": 1, "b": [2, {"c": nested(deepest - 2)}]})


# --- MySQLConfig -----------------------------------------------------------------------------

MYSQL_BAD: list[tuple[str, dict[str, Any], str]] = [
    ("user-empty", {"user": ""}, "user"),
    ("database-empty", {"database": ""}, "database"),
    ("host-empty", {"host": ""}, "host"),
    ("host-none", {"host": None}, "host"),
    ("password-none", {"password": None}, "password"),
    ("port-zero", {"port": 0}, "port"),
    ("port-too-big", {"port": 65536}, "port"),
    ("port-bool", {"port": True}, "port"),
    ("port-str", {"port": "3306"}, "port"),
    ("max-open-negative", {"max_open": -1}, "max_open"),
    ("max-open-float", {"max_open": 2.0}, "max_open"),
    ("max-idle-negative", {"max_idle": -1}, "max_idle"),
    ("max-idle-bool", {"max_idle": False}, "max_idle"),
    ("max-life-negative", {"max_life": timedelta(seconds=-1)}, "max_life"),
    ("max-life-seconds", {"max_life": 3600}, "max_life"),
]


@pytest.mark.parametrize(
    ("changes", "field"), [c[1:] for c in MYSQL_BAD], ids=[c[0] for c in MYSQL_BAD]
)
def test_mysql_config_bad_input(changes: dict[str, Any], field: str) -> None:
    values: dict[str, Any] = {"user": "root", "password": "secret", "database": "asynctask"}
    values.update(changes)
    with pytest.raises(ValidationError) as raised:
        MySQLConfig(**values)
    assert raised.value.field == field
    assert "secret" not in str(raised.value)


def test_mysql_config_spec_defaults_and_pool_mapping() -> None:
    config = MySQLConfig(user="root", password="pw", database="asynctask")
    assert (config.host, config.port) == ("localhost", 3306)
    assert (config.max_open, config.max_idle, config.max_life) == (0, 0, timedelta(0))
    # 0 = unlimited open and idle connections, and connections live forever.
    assert config.pool_options() == {"pool_size": 0, "max_overflow": -1, "pool_recycle": -1}
    url = config.url
    assert (url.host, url.port, url.database, url.username) == (
        "localhost",
        3306,
        "asynctask",
        "root",
    )
    assert url.get_backend_name() == "mysql" and url.password == "pw"


@pytest.mark.parametrize(
    ("max_open", "max_idle", "max_life", "expected"),
    [
        # The spec's tuning example: 20 open, 10 idle, recycled hourly.
        (20, 10, timedelta(hours=1), {"pool_size": 10, "max_overflow": 10, "pool_recycle": 3600}),
        (5, 0, timedelta(0), {"pool_size": 5, "max_overflow": 0, "pool_recycle": -1}),
        (5, 10, timedelta(0), {"pool_size": 5, "max_overflow": 0, "pool_recycle": -1}),
        (0, 4, timedelta(minutes=2), {"pool_size": 4, "max_overflow": -1, "pool_recycle": 120}),
        (1, 1, timedelta(0), {"pool_size": 1, "max_overflow": 0, "pool_recycle": -1}),
    ],
)
def test_mysql_config_pool_mapping(
    max_open: int, max_idle: int, max_life: timedelta, expected: dict[str, int]
) -> None:
    config = MySQLConfig(
        user="u", password="", database="d", max_open=max_open, max_idle=max_idle, max_life=max_life
    )
    options = config.pool_options()
    assert options == expected
    # Never more open connections than max_open, when it is set.
    if max_open:
        assert options["pool_size"] + options["max_overflow"] == max_open


@pytest.mark.parametrize("rate", [Decimal("1e26"), Decimal("-1E26"), Decimal("1e400")])
def test_a_decimal_too_large_to_quantize_is_out_of_range(rate: Decimal) -> None:
    """Hypothesis found it: quantize raised decimal.InvalidOperation before the range check."""
    with pytest.raises(ValidationError) as refused:
        TaskConfig("t", "n", ExecutorType.FUNCTION, backoff_rate=rate)
    assert refused.value.field == "backoff_rate"
    assert "between" in refused.value.limit


def test_postgres_config_mirrors_mysql_config() -> None:
    config = PostgresConfig(
        user="app",
        password="pw",
        database="queue",
        max_open=20,
        max_idle=10,
        max_life=timedelta(hours=1),
    )
    assert (config.host, config.port) == ("localhost", 5432)
    url = config.url
    assert url.drivername == "postgresql+psycopg"
    assert (url.username, url.password, url.database, url.port) == ("app", "pw", "queue", 5432)
    mysql = MySQLConfig(
        user="app",
        password="pw",
        database="queue",
        max_open=20,
        max_idle=10,
        max_life=timedelta(hours=1),
    )
    assert config.pool_options() == mysql.pool_options()
    with pytest.raises(ValidationError) as raised:
        PostgresConfig(user="app", password="secret", database="", port=5432)
    assert raised.value.field == "database" and "secret" not in str(raised.value)
