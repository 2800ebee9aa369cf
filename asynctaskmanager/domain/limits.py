"""The limits the schema imposes, in one place, so that every backend enforces the same ones."""

from __future__ import annotations

from datetime import datetime, timezone
from decimal import Decimal

ID_MAX = 64  # VARCHAR(64): task_id, task_type, worker_id, log_id
NAME_MAX = 128  # VARCHAR(128): task_name, worker_name
ADDRESS_MAX = 256  # VARCHAR(256): worker.address
ENUM_MAX = 32  # VARCHAR(32): statuses, log_type, executor_type, retry_strategy
TEXT_MAX_BYTES = 65_535  # MySQL TEXT holds 64 KiB of UTF-8

INT_MIN = -(2**31)
INT_MAX = 2**31 - 1

# DECIMAL(10,2)
DECIMAL_PLACES = Decimal("0.01")
DECIMAL_MAX = Decimal("99999999.99")

# JSON documents: MariaDB stores JSON as LONGTEXT, MySQL as a binary document bounded by
# max_allowed_packet; these limits keep a payload well inside both and cheap to move around.
JSON_MAX_BYTES = 1_048_576
JSON_MAX_DEPTH = 32

# TIMESTAMP's range on MySQL and MariaDB (UTC).
TIMESTAMP_MIN = datetime(1970, 1, 1, 0, 0, 1, tzinfo=timezone.utc)
TIMESTAMP_MAX = datetime(2038, 1, 19, 3, 14, 7, tzinfo=timezone.utc)

# Listings
PAGE_MAX = 10_000
