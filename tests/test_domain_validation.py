"""Bad input is refused on construction, with a ValidationError that names the field.

The same checks guard the repositories' parameters, and a refused write leaves the database as
it was on every backend.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from functools import partial
from typing import Any

import pytest
from sqlalchemy import URL, text
from sqlalchemy.pool import QueuePool

from asynctaskmanager import (
    ExecutorType,
    LogType,
    MySQLConfig,
    PostgresConfig,
    Storage,
    Task,
    TaskConfig,
    TaskFilter,
    TaskLog,
    TaskRequest,
    ValidationError,
    Worker,
    open_storage,
)
from asynctaskmanager.domain import limits

UTC = timezone.utc
NAIVE = datetime(2024, 1, 1, 12, 0, 0)
BEFORE_1970 = datetime(1969, 12, 31, 23, 59, 59, tzinfo=UTC)
EPOCH = datetime(1970, 1, 1, 0, 0, 0, tzinfo=UTC)  # TIMESTAMP starts one second later
AFTER_2038 = datetime(2038, 1, 19, 3, 14, 8, tzinfo=UTC)
# The same instant as 2038-01-19 03:14:08 UTC, written in +08:00.
AFTER_2038_PLUS8 = datetime(2038, 1, 19, 11, 14, 8, tzinfo=timezone(timedelta(hours=8)))
LONE_SURROGATE = "bad \ud800 text"


def nested(depth: int, leaf: Any = 1) -> Any:
    """``depth`` levels of arrays and objects, alternating, around ``leaf``."""
    value = leaf
    for level in range(depth):
        value = {"k": value} if level % 2 else [value]
    return value


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
    deepest = max(d for d in range(1, limits.JSON_MAX_DEPTH + 3) if _accepts(nested(d)))
    assert deepest <= limits.JSON_MAX_DEPTH
    assert deepest >= limits.JSON_MAX_DEPTH - 1  # the limit is not needlessly tight
    with pytest.raises(ValidationError) as raised:
        Task("e", payload=nested(deepest + 1))
    assert raised.value.field == "payload"
    # Depth does not depend on where the deep branch sits.
    assert _accepts({"a": 1, "b": [2, {"c": nested(deepest - 3)}]})
    assert not _accepts({"a": 1, "b": [2, {"c": nested(deepest - 2)}]})


def test_the_deepest_and_largest_accepted_json_is_stored(storage: Storage) -> None:
    """What validation lets through, every backend stores: the limits are the databases'."""
    deepest = max(d for d in range(1, limits.JSON_MAX_DEPTH + 3) if _accepts(nested(d)))
    for leaf in (1, "叶", None, [], {}):
        document = nested(deepest, leaf)
        if not _accepts(document):
            continue  # an empty container at the bottom is one level more
        task = Task("deep", document)
        storage.tasks.create(task)
        assert storage.tasks.get(task.task_id).payload == document
    overhead = len('{"blob":""}')
    largest = {"blob": "x" * (limits.JSON_MAX_BYTES - overhead)}
    assert _accepts(largest)
    assert not _accepts({"blob": largest["blob"] + "x"})
    storage.tasks.create(Task("large", largest, task_id="large"))
    assert storage.tasks.get("large").payload == largest


def _accepts(document: object) -> bool:
    try:
        Task("e", payload=document)
    except ValidationError:
        return False
    return True


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


# --- repository parameters -------------------------------------------------------------------


def repository_calls(storage: Storage) -> list[tuple[str, Callable[[], object], str]]:
    plus8 = timezone(timedelta(hours=8))
    return [
        ("order-unknown", lambda: storage.tasks.list(order_by="payload"), "order_by"),
        (
            "order-sql",
            lambda: storage.tasks.list(order_by="created_at; DROP TABLE task"),
            "order_by",
        ),
        ("limit-zero", lambda: storage.tasks.list(limit=0), "limit"),
        ("limit-too-big", lambda: storage.tasks.list(limit=limits.PAGE_MAX + 1), "limit"),
        ("limit-bool", lambda: storage.tasks.list(limit=True), "limit"),
        ("offset-negative", lambda: storage.tasks.list(offset=-1), "offset"),
        ("descending-str", lambda: storage.tasks.list(descending="yes"), "descending"),  # type: ignore[arg-type]
        ("filter-status", lambda: storage.tasks.list(TaskFilter(status="done")), "status"),  # type: ignore[arg-type]
        ("filter-status-empty", lambda: storage.tasks.count(TaskFilter(status=[])), "status"),
        ("filter-type", lambda: storage.tasks.count(TaskFilter(task_type="")), "task_type"),
        ("filter-worker", lambda: storage.tasks.list(TaskFilter(worker_id=" w")), "worker_id"),
        (
            "filter-from-naive",
            lambda: storage.tasks.list(TaskFilter(created_from=NAIVE)),
            "created_from",
        ),
        (
            "filter-to-2038",
            lambda: storage.tasks.count(TaskFilter(created_to=AFTER_2038)),
            "created_to",
        ),
        ("filter-not-filter", lambda: storage.tasks.list({"status": "pending"}), "where"),  # type: ignore[arg-type]
        ("task-get-empty", lambda: storage.tasks.get(""), "task_id"),
        ("task-find-int", lambda: storage.tasks.find(1), "task_id"),  # type: ignore[arg-type]
        ("task-delete-long", lambda: storage.tasks.delete("x" * 65), "task_id"),
        ("config-get-space", lambda: storage.task_configs.get("a "), "task_type"),
        ("config-list-limit", lambda: storage.task_configs.list(limit=0), "limit"),
        ("config-list-enabled", lambda: storage.task_configs.list(enabled=1), "enabled"),  # type: ignore[arg-type]
        ("config-count-enabled", lambda: storage.task_configs.count(enabled="no"), "enabled"),  # type: ignore[arg-type]
        ("log-list-task", lambda: storage.task_logs.list_for_task(""), "task_id"),
        ("log-list-limit", lambda: storage.task_logs.list_for_task("t", limit=10_001), "limit"),
        ("log-count-task", lambda: storage.task_logs.count_for_task(None), "task_id"),  # type: ignore[arg-type]
        ("log-delete", lambda: storage.task_logs.delete(""), "log_id"),
        ("worker-status", lambda: storage.workers.list(status="busy"), "status"),  # type: ignore[arg-type]
        (
            "worker-before-naive",
            lambda: storage.workers.count(heartbeat_before=NAIVE),
            "heartbeat_before",
        ),
        (
            "worker-after-1969",
            lambda: storage.workers.list(heartbeat_after=BEFORE_1970.astimezone(plus8)),
            "heartbeat_after",
        ),
        ("worker-offset", lambda: storage.workers.list(offset="1"), "offset"),  # type: ignore[arg-type]
        ("worker-get", lambda: storage.workers.get(""), "worker_id"),
    ]


def snapshot(storage: Storage) -> dict[str, list[tuple[Any, ...]]]:
    keys = {
        "task": "task_id",
        "task_config": "task_type",
        "task_log": "log_id",
        "worker": "worker_id",
    }
    with storage.engine.connect() as connection:
        return {
            table: [
                tuple(row)
                for row in connection.execute(text(f"SELECT * FROM {table} ORDER BY {key}"))
            ]
            for table, key in keys.items()
        }


def seed(storage: Storage) -> None:
    storage.task_configs.create(TaskConfig("email", "Email", ExecutorType.HTTP))
    storage.tasks.create(Task("email", {"n": 1}, task_id="t1"))
    storage.task_logs.create(TaskLog("t1", LogType.CREATED, log_id="l1"))
    storage.workers.create(Worker("w1", "one", "h:1"))


def test_repository_parameters_are_validated(storage: Storage) -> None:
    seed(storage)
    before = snapshot(storage)
    for name, call, field in repository_calls(storage):
        with pytest.raises(ValidationError) as raised:
            call()
        assert raised.value.field == field, name
    assert snapshot(storage) == before


def test_rejected_writes_leave_the_database_unchanged(storage: Storage) -> None:
    seed(storage)
    before = snapshot(storage)

    # A bulk insert whose input turns bad after a whole batch was sent: nothing stays.
    def tasks() -> Iterator[Task]:
        for i in range(1_005):
            yield Task("email", task_id=f"bulk-{i}")
        yield Task("email", task_id="bad id ")

    with pytest.raises(ValidationError):
        storage.tasks.create_many(tasks())
    assert snapshot(storage) == before

    # A unit of work that wrote to three tables, then met bad input.
    with pytest.raises(ValidationError), storage.unit_of_work() as uow:
        uow.tasks.create(Task("email", task_id="t2"))
        uow.task_logs.create(TaskLog("t2", LogType.CREATED, log_id="l2"))
        uow.workers.update(Worker("w1", "renamed", "h:2"))
        uow.tasks.update(dataclasses.replace(uow.tasks.get("t1"), timeout=-5))
    assert snapshot(storage) == before

    # Repository deletes and updates refuse bad keys before touching anything.
    with pytest.raises(ValidationError):
        storage.tasks.delete("t1 ")
    with pytest.raises(ValidationError):
        storage.task_configs.delete("")
    with pytest.raises(ValidationError):
        storage.workers.delete("w1\n")
    assert snapshot(storage) == before


SESSIONS_SQL = "SELECT COUNT(*) FROM information_schema.processlist WHERE db = DATABASE()"


def small_pool(kind: type[MySQLConfig] | type[PostgresConfig], url: URL) -> Storage:
    """A storage through ``kind`` for the database ``url`` names: 3 open, 1 idle, 5 minutes."""
    config = kind(
        user=url.username or "",
        password=url.password or "",
        database=url.database or "",
        host=url.host or "localhost",
        port=url.port or kind.port,
        max_open=3,
        max_idle=1,
        max_life=timedelta(minutes=5),
    )
    return open_storage(config)


@pytest.mark.mysql
def test_mysql_config_opens_a_pool_with_its_limits(mysql_database_url: URL) -> None:
    storage = small_pool(MySQLConfig, mysql_database_url)
    pool = storage.engine.pool
    assert isinstance(pool, QueuePool)
    assert (pool.size(), pool._max_overflow, pool._recycle) == (1, 2, 300)

    def sessions() -> int:
        with storage.engine.connect() as connection:
            return int(connection.execute(text(SESSIONS_SQL)).scalar_one())

    baseline = sessions()
    held = [storage.engine.connect() for _ in range(3)]  # max_open connections at once
    try:
        for connection in held:
            assert connection.execute(text("SELECT 1")).scalar_one() == 1
    finally:
        for connection in held:
            connection.close()
    assert pool.checkedout() == 0
    # Only max_idle connections stay open while idle; closing releases every one.
    assert pool.checkedin() == 1
    storage.close()
    probe = open_storage(mysql_database_url)
    try:
        with probe.engine.connect() as connection:
            remaining = connection.execute(text(SESSIONS_SQL)).scalar_one()
        assert remaining <= baseline  # the probe's own connection replaces the closed pool's
    finally:
        probe.close()


@pytest.mark.postgres
def test_postgres_config_opens_a_pool_with_its_limits(postgres_database_url: URL) -> None:
    storage = small_pool(PostgresConfig, postgres_database_url)
    try:
        assert storage.backend == "postgresql"
        pool = storage.engine.pool
        assert isinstance(pool, QueuePool)
        assert (pool.size(), pool._max_overflow, pool._recycle) == (1, 2, 300)
        held = [storage.engine.connect() for _ in range(3)]  # max_open connections at once
        try:
            for connection in held:
                assert connection.execute(text("SHOW TimeZone")).scalar_one() == "UTC"
        finally:
            for connection in held:
                connection.close()
        assert pool.checkedin() == 1  # only max_idle stay open while idle
    finally:
        storage.close()


# --- values that get past the entities' checks are still refused as invalid values -----------


def test_values_refused_by_the_database_are_validation_errors(storage: Storage) -> None:
    worker = Worker("w1", "one", "h:1")
    object.__setattr__(worker, "worker_name", None)  # past the entity's own checks
    with pytest.raises(ValidationError) as raised:
        storage.workers.create(worker)
    assert raised.value.field == "worker_name"
    assert "refused by the database" in str(raised.value)
    assert storage.workers.count() == 0


@pytest.mark.mysql
def test_mysql_refusals_name_the_column(mysql_storage: Storage) -> None:
    long_id = Task("t")
    object.__setattr__(long_id, "task_id", "x" * (limits.ID_MAX + 1))
    huge_priority = Task("t")
    object.__setattr__(huge_priority, "priority", limits.INT_MAX + 1)
    for task, field in ((long_id, "task_id"), (huge_priority, "priority")):
        with pytest.raises(ValidationError) as raised:
            mysql_storage.tasks.create(task)
        assert raised.value.field == field
    assert mysql_storage.tasks.count() == 0
