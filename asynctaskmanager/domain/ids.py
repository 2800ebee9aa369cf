"""Time-ordered identifiers.

A new id is a ULID (26 characters of Crockford base32: 48 bits of milliseconds, 80 random
bits). Within one process ids are strictly increasing, even inside one millisecond, so that
tasks created in the same second keep their creation order when the claim query breaks
``created_at`` ties by id. Across processes, order follows the clocks to the millisecond.
"""

from __future__ import annotations

import os
import threading
import time

_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
# Two characters per 10 bits: a lookup table of all 1,024 pairs (new_id runs twice per task).
_PAIRS = [high + low for high in _ALPHABET for low in _ALPHABET]
# The first 10 characters (5 pairs) are the milliseconds, the other 16 (8 pairs) the random
# bits: ids of one millisecond share their first 10 characters, encoded once.
_RANDOM_SHIFTS = tuple(range(70, -1, -10))
_RANDOM_MAX = (1 << 80) - 1
_lock = threading.Lock()
_last_ms = 0
_last_random = 0
_prefix_ms = -1
_prefix = ""


def new_id() -> str:
    global _last_ms, _last_random, _prefix_ms, _prefix
    with _lock:
        now_ms = time.time_ns() // 1_000_000
        if now_ms <= _last_ms:
            now_ms = _last_ms
            rand = _last_random + 1
            if rand > _RANDOM_MAX:  # 2**80 ids in one millisecond: borrow the next one
                now_ms += 1
                rand = int.from_bytes(os.urandom(10), "big") >> 1
        else:
            # Keep the top bit clear so the increment above has room to run.
            rand = int.from_bytes(os.urandom(10), "big") >> 1
        _last_ms, _last_random = now_ms, rand
        if now_ms != _prefix_ms:
            _prefix_ms = now_ms
            _prefix = "".join([_PAIRS[(now_ms >> shift) & 1023] for shift in (40, 30, 20, 10, 0)])
        prefix = _prefix
    return prefix + "".join([_PAIRS[(rand >> shift) & 1023] for shift in _RANDOM_SHIFTS])
