"""``asynctaskmanager partitions status|rotate`` on a partitioned MariaDB database, and its
short refusal where the backend does not partition."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import URL

from asynctaskmanager import open_storage
from asynctaskmanager.partitions import enable
from tests.cli.conftest import Run, assert_short_failure, url_text


@pytest.mark.mysql
def test_partitions_status_and_rotate(run: Run, fresh_mysql_database: URL) -> None:
    with open_storage(fresh_mysql_database, upgrade=True) as storage:
        enable(storage, ahead=2)
    url = url_text(fresh_mysql_database)

    status = run("partitions", "status", "--url", url, "--json")
    assert status.exit_code == 0, status.output
    parts = json.loads(status.stdout)
    assert {part["table"] for part in parts} == {"task", "task_log"}
    months = [part for part in parts if part["table"] == "task" and part["kind"] == "month"]
    assert len(months) >= 3  # the current month and two ahead
    assert all(part["unfinished"] == 0 for part in parts if part["table"] == "task")

    table = run("partitions", "status", "--url", url)
    assert table.exit_code == 0 and months[0]["name"] in table.stdout

    dry = run("partitions", "rotate", "--url", url, "--ahead", "4", "--dry-run")
    assert dry.exit_code == 0, dry.output
    assert "would run: ALTER TABLE task REORGANIZE PARTITION" in dry.stdout
    after_dry = json.loads(run("partitions", "status", "--url", url, "--json").stdout)
    assert after_dry == parts  # a dry run changes nothing

    real = run("partitions", "rotate", "--url", url, "--ahead", "4")
    assert real.exit_code == 0, real.output
    assert "ran: ALTER TABLE task REORGANIZE PARTITION" in real.stdout
    after = json.loads(run("partitions", "status", "--url", url, "--json").stdout)
    later = [part for part in after if part["table"] == "task" and part["kind"] == "month"]
    assert len(later) == len(months) + 2


def test_partitions_refused_on_sqlite(run: Run, sqlite_url: URL) -> None:
    open_storage(sqlite_url, upgrade=True).close()
    result = run("partitions", "status", "--url", url_text(sqlite_url))
    assert_short_failure(result)
    assert "partition" in result.output.lower()
