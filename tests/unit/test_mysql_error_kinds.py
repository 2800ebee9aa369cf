"""What the MySQL dialect reads off a driver error: known rollbacks, a Galera node that
cannot serve, and MySQL's own meaning of the same code."""

from __future__ import annotations

import pytest
from sqlalchemy.exc import OperationalError

from asynctaskmanager.infrastructure.dialects import ErrorKind
from asynctaskmanager.infrastructure.dialects.mysql import PROFILE


class DriverError(Exception):
    """Shaped like MySQLdb's errors: (code, message)."""


@pytest.mark.parametrize(
    ("code", "message", "kind"),
    [
        (
            1213,
            "Deadlock found when trying to get lock",
            ErrorKind(transient=True, rolled_back=True),
        ),
        (1047, "WSREP has not yet prepared node for application use", ErrorKind(transient=True)),
        (1047, "Unknown command", ErrorKind()),
        (1180, "Got error 6 during COMMIT", ErrorKind(transient=True)),
        (1205, "Lock wait timeout exceeded", ErrorKind(transient=True)),
        (2013, "Lost connection to server during query", ErrorKind(transient=True)),
        (1062, "Duplicate entry", ErrorKind(duplicate=True)),
    ],
)
def test_mysql_error_kinds(code: int, message: str, kind: ErrorKind) -> None:
    error = OperationalError("COMMIT", {}, DriverError(code, message))
    assert PROFILE.classify(error) == kind
