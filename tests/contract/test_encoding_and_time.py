"""Chinese text and emoji, None versus JSON null, and time zones, on every backend."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from sqlalchemy import URL, Connection, Engine, create_engine, text
from sqlalchemy.pool import NullPool

from asynctaskmanager import (
    ConfigurationError,
    ExecutorType,
    LogType,
    Storage,
    Task,
    TaskConfig,
    TaskFilter,
    TaskLog,
    TaskStatus,
    Worker,
    open_storage,
)
from asynctaskmanager.domain import limits

UTC = timezone.utc
PLUS8 = timezone(timedelta(hours=8))
MINUS5 = timezone(timedelta(hours=-5, minutes=-30))
INSTANT = datetime(2024, 3, 1, 4, 0, 0, tzinfo=UTC)

CHINESE_JSON: dict[str, Any] = {
    "名字": "张三",
    "emoji": "🎉🚀👩‍👩‍👧‍👦",
    "列表": ["😀", "中文", {"深": "𠀀𪚥"}],  # 4-byte CJK extension B characters too
    "mixed": "Ünïcödé ✓ 漢字 🐉",
}


def scalar(storage: Storage, sql: str, **params: Any) -> Any:
    with storage.engine.connect() as connection:
        return connection.execute(text(sql), params).scalar_one()


def near_now(value: datetime | None, slack: float = 5.0) -> bool:
    assert value is not None
    assert value.tzinfo is UTC or value.utcoffset() == timedelta(0)
    return abs((value - datetime.now(UTC)).total_seconds()) <= slack


# --- Chinese text and emoji ------------------------------------------------------------------


def test_chinese_and_emoji_round_trip_in_every_column_kind(storage: Storage) -> None:
    task = Task(
        "邮件-📧",
        payload=CHINESE_JSON,
        task_id="任务-🎯-1",
        result={"结果": "成功 ✅"},
        error_message="错误 💥: 连接超时\n第二行 🐛",
        worker_id="工人-🐝",
    )
    config = TaskConfig(
        "邮件-📧",
        "发送邮件 📧",
        ExecutorType.HTTP,
        description="描述: 发送电子邮件 ✉️" * 100,
        executor_config={"模板": "欢迎 🎊"},
    )
    log = TaskLog(task.task_id, LogType.INFO, message="日志 📝", details={"细节": ["😀"]})
    worker = Worker("工人-🐝", "工作者 🐝", "主机.例子:9000", supported_types=["邮件-📧"])
    with storage.unit_of_work() as uow:
        uow.task_configs.create(config)
        uow.tasks.create(task)
        uow.task_logs.create(log)
        uow.workers.create(worker)
        uow.commit()

    stored = storage.tasks.get("任务-🎯-1")
    assert (stored.payload, stored.result, stored.error_message) == (
        task.payload,
        task.result,
        task.error_message,
    )
    assert (stored.task_type, stored.worker_id) == (task.task_type, task.worker_id)
    stored_config = storage.task_configs.get("邮件-📧")
    assert stored_config.task_name == config.task_name
    assert stored_config.description == config.description
    assert stored_config.executor_config == config.executor_config
    [stored_log] = storage.task_logs.list_for_task("任务-🎯-1")
    assert (stored_log.message, stored_log.details) == (log.message, log.details)
    stored_worker = storage.workers.get("工人-🐝")
    assert (stored_worker.worker_name, stored_worker.address) == (
        worker.worker_name,
        worker.address,
    )
    assert stored_worker.supported_types == ["邮件-📧"]
    # Filters match non-ASCII keys exactly.
    assert storage.tasks.count(TaskFilter(task_type="邮件-📧", worker_id="工人-🐝")) == 1
    assert storage.tasks.count(TaskFilter(task_type="邮件")) == 0


def test_stored_json_is_readable_text_for_the_database(storage: Storage) -> None:
    """The JSON is stored as UTF-8 text, not as \\u escapes, and the database can query it."""
    storage.tasks.create(Task("t", CHINESE_JSON, task_id="json-1"))
    # psycopg returns JSONB parsed; its ::text is the stored document.
    as_text = "payload::text" if storage.engine.dialect.name == "postgresql" else "payload"
    raw = scalar(storage, f"SELECT {as_text} FROM task WHERE task_id = 'json-1'")
    assert "张三" in raw and "🎉" in raw and "\\u" not in raw
    if storage.engine.dialect.name == "sqlite":
        sql = "SELECT json_extract(payload, '$.\"名字\"') FROM task"
    elif storage.engine.dialect.name == "postgresql":
        sql = "SELECT payload ->> '名字' FROM task"
    else:
        sql = "SELECT JSON_UNQUOTE(JSON_EXTRACT(payload, '$.\"名字\"')) FROM task"
    assert scalar(storage, sql) == "张三"


def test_text_and_varchar_limits_with_multibyte_characters(storage: Storage) -> None:
    # Exactly 65,535 bytes of UTF-8, mostly 4-byte emoji: the most a TEXT column holds.
    longest = "😀" * (limits.TEXT_MAX_BYTES // 4) + "汉"
    assert len(longest.encode("utf-8")) == limits.TEXT_MAX_BYTES
    # VARCHAR counts characters: 128 emoji fit in task_name, 64 in a key.
    name = "🐉" * limits.NAME_MAX
    key = "键" * limits.ID_MAX
    storage.task_configs.create(TaskConfig(key, name, ExecutorType.SCRIPT, description=longest))
    stored = storage.task_configs.get(key)
    assert (stored.task_type, stored.task_name, stored.description) == (key, name, longest)
    storage.tasks.create(Task(key, error_message=longest, task_id=key))
    assert storage.tasks.get(key).error_message == longest


# --- None versus JSON null -------------------------------------------------------------------

NULL_CASES: list[tuple[str, Any]] = [
    ("nested-nulls", {"a": None, "b": [None, {"c": None}]}),
    ("list-of-null", [None]),
    ("empty-object", {}),
    ("empty-list", []),
    ("zero", 0),
    ("false", False),
    ("empty-string", ""),
    ("string-null", "null"),
]


def test_none_is_sql_null_and_json_nulls_survive(storage: Storage) -> None:
    storage.tasks.create(Task("t", None, task_id="none"))
    for name, value in NULL_CASES:
        storage.tasks.create(Task("t", value, task_id=name, result=value))
    assert scalar(storage, "SELECT COUNT(*) FROM task WHERE payload IS NULL") == 1
    assert scalar(storage, "SELECT task_id FROM task WHERE payload IS NULL") == "none"
    assert scalar(storage, "SELECT COUNT(*) FROM task WHERE result IS NULL") == 1
    assert storage.tasks.get("none").payload is None
    for name, value in NULL_CASES:
        stored = storage.tasks.get(name)
        assert stored.payload == value and type(stored.payload) is type(value), name
        assert stored.result == value, name
    # Updating a value to None writes SQL NULL again.
    storage.tasks.update(Task("t", None, task_id="nested-nulls", result=None))
    assert scalar(storage, "SELECT COUNT(*) FROM task WHERE payload IS NULL") == 2


def test_none_is_sql_null_in_every_json_column(storage: Storage) -> None:
    storage.task_configs.create(TaskConfig("t", "n", ExecutorType.HTTP, executor_config=None))
    storage.task_configs.create(
        TaskConfig("u", "n", ExecutorType.HTTP, executor_config={"x": None})
    )
    storage.task_logs.create(TaskLog("t", LogType.INFO, details=None, log_id="l1"))
    storage.task_logs.create(TaskLog("t", LogType.INFO, details=[None], log_id="l2"))
    storage.workers.create(Worker("w1", "n", "h", supported_types=None))
    storage.workers.create(Worker("w2", "n", "h", supported_types=[]))
    assert scalar(storage, "SELECT task_type FROM task_config WHERE executor_config IS NULL") == "t"
    assert scalar(storage, "SELECT log_id FROM task_log WHERE details IS NULL") == "l1"
    assert scalar(storage, "SELECT worker_id FROM worker WHERE supported_types IS NULL") == "w1"
    assert storage.task_configs.get("u").executor_config == {"x": None}
    assert storage.task_logs.get("l2").details == [None]
    assert storage.workers.get("w2").supported_types == []


# --- time -------------------------------------------------------------------------------------


def test_aware_datetimes_in_any_zone_come_back_as_the_same_instant_in_utc(
    storage: Storage,
) -> None:
    in_plus8 = INSTANT.astimezone(PLUS8)
    assert in_plus8.hour == 12
    task = Task(
        "t",
        task_id="tz",
        created_at=in_plus8,
        scheduled_at=INSTANT.astimezone(MINUS5) + timedelta(hours=1),
        started_at=in_plus8 + timedelta(hours=2),
        completed_at=INSTANT + timedelta(hours=3),
    )
    storage.tasks.create(task)
    stored = storage.tasks.get("tz")
    expected = [INSTANT + timedelta(hours=h) for h in range(4)]
    got = [stored.created_at, stored.scheduled_at, stored.started_at, stored.completed_at]
    assert got == expected
    assert all(value is not None and value.tzinfo is UTC for value in got)
    # The database holds the UTC wall time, whatever zone the value came in.
    raw = scalar(storage, "SELECT created_at FROM task WHERE task_id = 'tz'")
    assert str(raw)[:19] == "2024-03-01 04:00:00"
    # And filters written in another zone select by the instant.
    assert storage.tasks.count(TaskFilter(created_from=in_plus8)) == 1
    assert storage.tasks.count(TaskFilter(created_to=in_plus8)) == 0

    storage.workers.create(Worker("w", "n", "h", last_heartbeat=in_plus8))
    assert storage.workers.get("w").last_heartbeat == INSTANT
    storage.task_logs.create(TaskLog("tz", LogType.INFO, log_id="l", created_at=in_plus8))
    assert storage.task_logs.get("l").created_at == INSTANT
    storage.task_configs.create(TaskConfig("t", "n", ExecutorType.HTTP, created_at=in_plus8))
    assert storage.task_configs.get("t").created_at == INSTANT


def test_microseconds_are_dropped_the_same_way_everywhere(storage: Storage) -> None:
    # Truncated, never rounded: .999999 stays in its second on every backend.
    fine = (INSTANT + timedelta(microseconds=999_999)).astimezone(PLUS8)
    storage.tasks.create(Task("t", task_id="us", created_at=fine, started_at=fine))
    stored = storage.tasks.get("us")
    assert stored.created_at == INSTANT and stored.started_at == INSTANT
    raw = scalar(storage, "SELECT started_at FROM task WHERE task_id = 'us'")
    # PostgreSQL's timestamptz comes back as an instant, in the session's zone (UTC).
    assert str(raw) in ("2024-03-01 04:00:00", "2024-03-01 04:00:00.000000", f"{INSTANT}")
    # Same-second rows tie the same way on every backend: task_id decides.
    for suffix in ("b", "a", "c"):
        storage.tasks.create(
            Task("tie", task_id=f"tie-{suffix}", created_at=INSTANT + timedelta(microseconds=7))
        )
    listed = storage.tasks.list(TaskFilter(task_type="tie"))
    assert [t.task_id for t in listed] == ["tie-a", "tie-b", "tie-c"]


def test_timestamp_range_edges_are_stored(storage: Storage) -> None:
    storage.tasks.create(
        Task(
            "t",
            task_id="edges",
            created_at=limits.TIMESTAMP_MIN,
            completed_at=limits.TIMESTAMP_MAX.astimezone(PLUS8),
        )
    )
    stored = storage.tasks.get("edges")
    assert (stored.created_at, stored.completed_at) == (limits.TIMESTAMP_MIN, limits.TIMESTAMP_MAX)


def test_server_defaults_use_the_current_utc_time(storage: Storage) -> None:
    storage.tasks.create(Task("t", task_id="now"))
    storage.task_configs.create(TaskConfig("t", "n", ExecutorType.HTTP))
    storage.task_logs.create(TaskLog("now", LogType.CREATED, log_id="now"))
    storage.workers.create(Worker("now", "n", "h"))
    config = storage.task_configs.get("t")
    assert near_now(storage.tasks.get("now").created_at)
    assert near_now(config.created_at) and near_now(config.updated_at)
    assert near_now(storage.task_logs.get("now").created_at)
    assert near_now(storage.workers.get("now").last_heartbeat)


# --- MySQL: a session in +08:00 does not shift a stored instant -------------------------------


@pytest.fixture
def plus8(mysql_database_url: URL) -> Iterator[Connection]:
    """A plain connection (none of the library's settings) whose session runs in +08:00."""
    engine: Engine = create_engine(mysql_database_url, poolclass=NullPool)
    try:
        with engine.connect() as connection:
            connection.execute(text("SET time_zone = '+08:00'"))
            assert connection.execute(text("SELECT @@session.time_zone")).scalar_one() == "+08:00"
            yield connection
    finally:
        engine.dispose()


@pytest.mark.mysql
def test_library_sessions_run_in_utc_whatever_the_server_or_url_says(
    mysql_storage: Storage, mysql_database_url: URL
) -> None:
    engine = mysql_storage.engine
    connections = [engine.connect() for _ in range(3)]  # several pool members, not just one
    try:
        for connection in connections:
            row = connection.execute(
                text(
                    "SELECT @@session.time_zone, @@session.sql_mode, "
                    "@@session.character_set_connection, @@session.character_set_client"
                )
            ).one()
            assert row[0] == "+00:00"
            assert "STRICT_ALL_TABLES" in row[1].split(",")
            assert (row[2], row[3]) == ("utf8mb4", "utf8mb4")
    finally:
        for connection in connections:
            connection.close()
    # A URL that asks for another zone, charset or SQL mode does not win over the library's
    # settings, not even in what SQLAlchemy reads at the first connect; the rest of its
    # init_command still runs.
    url = mysql_database_url.update_query_dict(
        {
            "init_command": "SET time_zone = '+08:00', innodb_lock_wait_timeout = 7,"
            " sql_mode = 'ANSI_QUOTES'",
            "charset": "latin1",
        }
    )
    storage = open_storage(url)
    try:
        with storage.engine.connect() as connection:
            assert not connection.dialect._server_ansiquotes  # type: ignore[attr-defined]
        with storage.engine.connect() as connection:
            zone, charset, lock_wait = connection.execute(
                text(
                    "SELECT @@session.time_zone, @@session.character_set_connection, "
                    "@@session.innodb_lock_wait_timeout"
                )
            ).one()
        assert (zone, charset, int(lock_wait)) == ("+00:00", "utf8mb4", 7)
        storage.tasks.create(Task("t", task_id="url8", created_at=INSTANT.astimezone(PLUS8)))
        assert storage.tasks.get("url8").created_at == INSTANT
        assert mysql_storage.tasks.get("url8").created_at == INSTANT
        epoch = scalar(storage, "SELECT UNIX_TIMESTAMP(created_at) FROM task")
        assert int(epoch) == int(INSTANT.timestamp())
    finally:
        storage.close()


@pytest.mark.mysql
def test_stored_instant_is_utc_seen_from_a_plus8_session(
    mysql_storage: Storage, plus8: Connection
) -> None:
    mysql_storage.tasks.create(Task("t", task_id="tz8", created_at=INSTANT))
    shown, epoch = plus8.execute(
        text("SELECT created_at, UNIX_TIMESTAMP(created_at) FROM task WHERE task_id = 'tz8'")
    ).one()
    # The +08:00 session shows local wall time for the same instant.
    assert shown == INSTANT.astimezone(PLUS8).replace(tzinfo=None)
    assert int(epoch) == int(INSTANT.timestamp())


@pytest.mark.mysql
def test_rows_written_by_a_plus8_session_read_back_as_utc(
    mysql_storage: Storage, plus8: Connection
) -> None:
    # A writer in +08:00 (the Go service on a Beijing server, say) gives local wall times,
    # and lets the server fill in CURRENT_TIMESTAMP.
    plus8.execute(
        text(
            "INSERT INTO task (task_id, task_type, status, scheduled_at) "
            "VALUES ('go-1', 't', 'pending', '2024-03-01 12:00:00')"
        )
    )
    plus8.execute(
        text(
            "INSERT INTO worker (worker_id, worker_name, address, status) "
            "VALUES ('go-w', 'n', 'h', 'online')"
        )
    )
    plus8.commit()
    task = mysql_storage.tasks.get("go-1")
    assert task.scheduled_at == INSTANT
    assert task.status is TaskStatus.PENDING
    assert near_now(task.created_at)
    assert near_now(mysql_storage.workers.get("go-w").last_heartbeat)
    # And the instants compare correctly against the library's own UTC values.
    assert (
        mysql_storage.workers.count(heartbeat_after=datetime.now(UTC) - timedelta(minutes=1)) == 1
    )
    assert (
        mysql_storage.tasks.count(TaskFilter(created_from=datetime.now(UTC) - timedelta(hours=1)))
        == 1
    )


def test_an_init_command_given_twice_in_the_url_is_a_configuration_error() -> None:
    url = "mysql://root@127.0.0.1/test?init_command=SET+a%3D1&init_command=SET+b%3D2"
    with pytest.raises(ConfigurationError, match="init_command"):
        open_storage(url)


# --- PostgreSQL: timestamptz holds the instant; no session zone shifts it ----------------------


@pytest.mark.postgres
def test_postgres_session_zone_cannot_shift_an_instant(
    postgres_storage: Storage, postgres_database_url: URL
) -> None:
    # A URL that asks for another zone: the library's options come last and win.
    url = postgres_database_url.update_query_dict({"options": "-c timezone=Asia/Shanghai"})
    storage = open_storage(url)
    try:
        assert scalar(storage, "SHOW TimeZone") == "UTC"
        storage.tasks.create(Task("t", task_id="pg8", created_at=INSTANT.astimezone(PLUS8)))
        assert storage.tasks.get("pg8").created_at == INSTANT
    finally:
        storage.close()
    # A plain session in +08:00 sees the same instant, shown in its own zone, and rows it
    # writes in its wall time read back as the instant it meant.
    engine = create_engine(postgres_database_url, poolclass=NullPool)
    try:
        with engine.begin() as connection:
            connection.execute(text("SET TimeZone = 'Asia/Shanghai'"))
            shown, epoch = connection.execute(
                text(
                    "SELECT created_at::text, extract(epoch FROM created_at) FROM task "
                    "WHERE task_id = 'pg8'"
                )
            ).one()
            assert shown == "2024-03-01 12:00:00+08"
            assert int(epoch) == int(INSTANT.timestamp())
            connection.execute(
                text(
                    "INSERT INTO task (task_id, task_type, status, created_at) "
                    "VALUES ('by8', 't', 'pending', '2024-03-01 12:00:00')"
                )
            )
    finally:
        engine.dispose()
    assert postgres_storage.tasks.get("by8").created_at == INSTANT
