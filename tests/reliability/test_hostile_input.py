"""Hostile input: SQL in every text field, filter and ordering parameter; look-alike ids.

Everything is a bound parameter, so an injection string is stored and matched literally and
never executed: the tables are still there and hold what they should. Ordering accepts only
the columns of :class:`TaskOrder`; filters only the fields of :class:`TaskFilter`, each
validated. Keys match exactly on every backend: ``Task-1`` and ``task-1`` are two keys (MySQL
keys use a binary collation), and a key with leading or trailing white space is refused with
:class:`ValidationError` (so MySQL's PAD SPACE comparison can never make ``'a '`` find
``'a'``).
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone, tzinfo
from typing import Any

import pytest

from asynctaskmanager import (
    ExecutorType,
    LogType,
    NotFoundError,
    Storage,
    Task,
    TaskConfig,
    TaskFilter,
    TaskLog,
    TaskOrder,
    TaskStatus,
    ValidationError,
    Worker,
    WorkerStatus,
)
from tests.support.faults import row_counts

INJECTIONS = [
    "'; DROP TABLE task; --",
    '"; DROP TABLE task_log; --',
    "x' OR '1'='1",
    'x" OR "1"="1',
    "1; DELETE FROM worker",
    "') OR 1=1 -- ",
    "\\'; DROP TABLE task_config; #",
    "Robert'); DROP TABLE task;--",
    "' UNION SELECT user, password FROM mysql.user --",
    "%' OR task_id LIKE '%",
    "%",
    "_",
    "`task`",
    "/* */ SELECT 1",
    "%s",
    "%(task_id)s",
    ":task_id",
    "?",
    "$1",
    "\\",
    "\\\\'",
    "\\0",
    "\x1a",
    "\x00'; SELECT 1",
    "\n\r\t'",
    "'||(SELECT SLEEP(5))||'",
    "1' AND SLEEP(5) AND '1'='1",
    "CHAR(39)",
    "0x27",
    "N'x'",
    "\u02bc OR \u02bc1\u02bc=\u02bc1",  # look-alike quotes
    "\uff07 OR 1=1 --",  # fullwidth quote
]


def as_id(text: str, n: int) -> str | None:
    """The injection as a valid key, if it can be one (printable, no edge white space)."""
    candidate = text.strip()
    if not candidate or not candidate.isprintable():
        return None
    return candidate[:60] + (f"#{n}" if len(candidate) < 60 else "")


ID_INJECTIONS = [i for i in (as_id(text, n) for n, text in enumerate(INJECTIONS)) if i]


def _config(task_type: str, **kw: Any) -> TaskConfig:
    return TaskConfig(task_type, kw.pop("task_name", "name"), ExecutorType.FUNCTION, **kw)


def test_injection_ids_are_stored_and_found_literally(storage: Storage) -> None:
    assert len(ID_INJECTIONS) >= 25
    for n, key in enumerate(ID_INJECTIONS):
        storage.task_configs.create(_config(key))
        storage.queue.register_worker(Worker(key, "w", "h:1"))
        storage.queue.enqueue(key, {"n": n}, task_id=key)
    total = len(ID_INJECTIONS)
    assert row_counts(storage) == {
        "task": total,
        "task_log": total,
        "worker": total,
        "task_config": total,
    }
    for key in ID_INJECTIONS:
        assert storage.tasks.get(key).task_id == key
        assert storage.task_configs.get(key).task_type == key
        assert storage.workers.get(key).worker_id == key
        assert storage.tasks.count(TaskFilter(task_type=key)) == 1
        assert [t.task_id for t in storage.tasks.list(TaskFilter(task_type=key))] == [key]
        assert storage.task_logs.count_for_task(key) == 1
    for key in ID_INJECTIONS:
        [claimed] = storage.queue.claim(key)  # each worker supports every type
        assert storage.queue.complete(claimed, {"by": key})
        assert storage.tasks.count(TaskFilter(worker_id=key)) == 1
    assert storage.tasks.count(TaskFilter(status=TaskStatus.COMPLETED)) == total
    assert storage.tasks.count() == total
    # Deleting by an injection key deletes exactly that row.
    storage.tasks.delete(ID_INJECTIONS[0])
    assert storage.tasks.count() == total - 1
    assert storage.tasks.find(ID_INJECTIONS[0]) is None


def storable(storage: Storage, text: str) -> bool:
    """PostgreSQL's text and jsonb cannot hold U+0000; the other backends store it."""
    return not (storage.backend == "postgresql" and "\x00" in text)


def test_injection_text_and_json_round_trip_literally(storage: Storage) -> None:
    for n, text in enumerate(INJECTIONS):
        task_type = f"type-{n}"
        if not storable(storage, text):
            # Refused by psycopg before it is sent, as a ValidationError, and nothing stored.
            with pytest.raises(ValidationError):
                storage.task_configs.create(_config(task_type, description=text))
            with pytest.raises(ValidationError):
                storage.queue.enqueue("type-0", {"k": text})
            assert storage.task_configs.find(task_type) is None
            continue
        storage.task_configs.create(
            _config(
                task_type,
                task_name=text[:128] or "x",
                description=text,
                executor_config={text: text, "list": [text]},
            )
        )
        worker = Worker(f"w-{n}", text[:128] or "x", text[:256] or "x")
        storage.queue.register_worker(worker)
        task = storage.queue.enqueue(task_type, {text: [text, {"k": text}]}, task_id=f"t-{n}")
        [claimed] = storage.queue.claim(f"w-{n}")
        if n % 3 == 0:
            assert storage.queue.complete(claimed, {"result": text, text: None})
        elif n % 3 == 1:
            assert storage.queue.fail(claimed, text, retry=False)
        else:
            assert storage.queue.cancel(task.task_id, text)
        storage.task_logs.create(TaskLog(task.task_id, LogType.INFO, message=text, details=[text]))

    for n, text in enumerate(INJECTIONS):
        if not storable(storage, text):
            continue
        config = storage.task_configs.get(f"type-{n}")
        assert (config.task_name, config.description) == (text[:128] or "x", text)
        assert config.executor_config == {text: text, "list": [text]}
        worker = storage.workers.get(f"w-{n}")
        assert (worker.worker_name, worker.address) == (text[:128] or "x", text[:256] or "x")
        task = storage.tasks.get(f"t-{n}")
        assert task.payload == {text: [text, {"k": text}]}
        if n % 3 == 0:
            assert task.result == {"result": text, text: None}
        else:
            assert task.error_message == text
        info = [log for log in storage.task_logs.list_for_task(task.task_id) if log.message]
        assert [(log.message, log.details) for log in info if log.log_type is LogType.INFO] == [
            (text, [text])
        ]
    total = sum(storable(storage, text) for text in INJECTIONS)
    counts = row_counts(storage)
    assert counts["task"] == counts["worker"] == counts["task_config"] == total
    assert counts["task_log"] == total * 4  # created, claimed, final transition, info


@pytest.mark.parametrize("hostile", INJECTIONS)
def test_injection_filters_match_nothing_they_should_not(storage: Storage, hostile: str) -> None:
    storage.task_configs.create(_config("t"))
    storage.queue.register_worker(Worker("w1", "w", "h:1"))
    storage.queue.enqueue("t", task_id="a")
    storage.queue.enqueue("t", task_id="b")
    before = row_counts(storage)
    key = as_id(hostile, 0)
    if key is None:  # not a valid key at all: refused before any SQL
        with pytest.raises(ValidationError) as info:
            storage.tasks.list(TaskFilter(task_type=hostile))
        assert info.value.field == "task_type"
    else:
        assert storage.tasks.list(TaskFilter(task_type=key)) == []
        assert storage.tasks.count(TaskFilter(worker_id=key)) == 0
        assert storage.tasks.find(key) is None
        assert storage.workers.find(key) is None
        assert storage.task_logs.count_for_task(key) == 0
        with pytest.raises(NotFoundError):
            storage.queue.heartbeat(key)
        with pytest.raises(NotFoundError):
            storage.queue.cancel(key)
        with pytest.raises(NotFoundError):
            storage.task_configs.delete(key)
    for bad in (hostile, f"pending{hostile}", f"online' OR '1'='1{hostile}"):
        with pytest.raises(ValidationError) as info:
            storage.tasks.list(TaskFilter(status=bad))  # type: ignore[arg-type]
        assert info.value.field == "status"
        with pytest.raises(ValidationError) as info:
            storage.workers.list(status=bad)  # type: ignore[arg-type]
        assert info.value.field == "status"
    assert row_counts(storage) == before
    assert {t.task_id for t in storage.tasks.list()} == {"a", "b"}


ORDERINGS = [
    "created_at; DROP TABLE task",
    "created_at DESC",
    "priority, (SELECT 1)",
    "status",  # a real column, but not one listings may be ordered by
    "payload",
    "task_id --",
    "CREATED_AT",
    "1",
    "",
    "created_at ",
    "(CASE WHEN 1=1 THEN task_id END)",
]


@pytest.mark.parametrize("ordering", ORDERINGS)
def test_ordering_accepts_only_known_columns(storage: Storage, ordering: str) -> None:
    storage.task_configs.create(_config("t"))
    storage.queue.enqueue("t", task_id="a")
    before = row_counts(storage)
    with pytest.raises(ValidationError) as info:
        storage.tasks.list(order_by=ordering)
    assert info.value.field == "order_by"
    assert row_counts(storage) == before


def test_every_known_ordering_works_by_member_and_by_name(storage: Storage) -> None:
    storage.task_configs.create(_config("t"))
    for key in ("b", "a", "c"):
        storage.queue.enqueue("t", task_id=key)
    for order in TaskOrder:
        for given in (order, order.value):
            forward = [t.task_id for t in storage.tasks.list(order_by=given)]
            backward = [t.task_id for t in storage.tasks.list(order_by=given, descending=True)]
            assert sorted(forward) == ["a", "b", "c"]
            assert backward == forward[::-1]
    assert [t.task_id for t in storage.tasks.list(order_by=TaskOrder.TASK_ID)] == ["a", "b", "c"]


def test_filters_have_only_known_fields() -> None:
    """There is no string-keyed filter: an unknown field cannot even be named."""
    with pytest.raises(TypeError):
        TaskFilter(**{"status = 'x' OR 1=1 --": "pending"})  # type: ignore[arg-type]
    with pytest.raises((AttributeError, TypeError)):
        TaskFilter().payload = "x"  # type: ignore[attr-defined]


# --- look-alike ids ---------------------------------------------------------------------------

CASE_PAIRS = [
    ("Task-1", "task-1"),
    ("ABC", "abc"),
    ("É", "é"),
    ("é", "e\u0301"),  # composed and decomposed: different code points, different keys
    ("straße", "STRASSE"),
    ("ǅ", "ǆ"),
    ("\uff21", "A"),  # fullwidth and ASCII: equal under some collations
    ("i", "İ"),
    ("a", "ª"),
]


@pytest.mark.parametrize(("one", "other"), CASE_PAIRS)
def test_ids_differing_only_in_case_or_form_are_distinct(
    storage: Storage, one: str, other: str
) -> None:
    for key in (one, other):
        storage.task_configs.create(_config(key, task_name=f"name {key}"))
        storage.queue.register_worker(Worker(key, f"name {key}", "h:1", supported_types=[key]))
        storage.queue.enqueue(key, {"key": key}, task_id=key)
        storage.task_logs.create(TaskLog(key, LogType.INFO, log_id=f"{key}-log", message=key))
    for key in (one, other):
        assert storage.tasks.get(key).payload == {"key": key}
        assert storage.task_configs.get(key).task_name == f"name {key}"
        assert storage.workers.get(key).worker_name == f"name {key}"
        assert storage.task_logs.get(f"{key}-log").message == key
        assert storage.tasks.count(TaskFilter(task_type=key)) == 1
        assert storage.task_logs.count_for_task(key) == 2
        [claimed] = storage.queue.claim(key)
        assert claimed.task_id == key
        assert storage.tasks.count(TaskFilter(worker_id=key)) == 1
    storage.tasks.delete(one)
    assert storage.tasks.find(one) is None
    assert storage.tasks.get(other).task_id == other
    assert row_counts(storage)["task"] == 1


PADDED = ["task-1 ", " task-1", "task-1  ", "task-1\t", "task-1\u00a0", "\u3000task-1", "task-1\n"]


@pytest.mark.parametrize("padded", PADDED, ids=repr)
def test_ids_with_surrounding_white_space_are_refused_everywhere(
    storage: Storage, padded: str
) -> None:
    storage.task_configs.create(_config("task-1"))
    storage.queue.register_worker(Worker("task-1", "w", "h:1"))
    storage.queue.enqueue("task-1", task_id="task-1")
    before = row_counts(storage)
    attempts: list[tuple[str, Any]] = [
        ("task_id", lambda: storage.tasks.get(padded)),
        ("task_id", lambda: storage.tasks.find(padded)),
        ("task_id", lambda: storage.tasks.delete(padded)),
        ("task_id", lambda: storage.queue.cancel(padded)),
        ("task_id", lambda: storage.queue.enqueue("task-1", task_id=padded)),
        ("task_id", lambda: storage.task_logs.count_for_task(padded)),
        ("task_type", lambda: storage.task_configs.get(padded)),
        ("task_type", lambda: storage.queue.enqueue(padded)),
        ("task_type", lambda: storage.tasks.count(TaskFilter(task_type=padded))),
        ("worker_id", lambda: storage.workers.get(padded)),
        ("worker_id", lambda: storage.queue.claim(padded)),
        ("worker_id", lambda: storage.queue.heartbeat(padded)),
        ("worker_id", lambda: storage.tasks.list(TaskFilter(worker_id=padded))),
        ("worker_id", lambda: Worker(padded, "w", "h:1")),
        ("task_id", lambda: Task("task-1", task_id=padded)),
        ("log_id", lambda: TaskLog("task-1", LogType.INFO, log_id=padded)),
    ]
    for field, attempt in attempts:
        with pytest.raises(ValidationError) as info:
            attempt()
        assert info.value.field == field, (field, padded)
    assert row_counts(storage) == before
    # The exact key still works.
    assert storage.tasks.get("task-1").status is TaskStatus.PENDING
    assert storage.workers.get("task-1").status is WorkerStatus.ONLINE


def test_the_time_filter_is_bound_not_formatted(storage: Storage) -> None:
    """Datetimes reach the database as parameters: a hostile tzinfo name changes nothing."""

    class Hostile(tzinfo):
        def utcoffset(self, dt: datetime | None) -> timedelta:
            return timedelta(0)

        def dst(self, dt: datetime | None) -> timedelta:
            return timedelta(0)

        def tzname(self, dt: datetime | None) -> str:
            return "UTC'; DROP TABLE task; --"

    storage.task_configs.create(_config("t"))
    storage.queue.enqueue("t", task_id="a")
    since = datetime(2000, 1, 1)
    hostile = since.replace(tzinfo=Hostile())
    assert storage.tasks.count(TaskFilter(created_from=hostile)) == 1
    assert storage.tasks.count(TaskFilter(created_from=since.replace(tzinfo=timezone.utc))) == 1
    assert row_counts(storage)["task"] == 1
