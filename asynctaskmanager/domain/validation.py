"""Checks shared by the entities. Each raises :class:`ValidationError` naming the field and limit.

They run on every entity construction, so they are written to be cheap: no regex, one pass.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from datetime import datetime, timezone
from decimal import Decimal, InvalidOperation
from enum import Enum
from typing import Any, TypeVar

from asynctaskmanager.domain import limits
from asynctaskmanager.errors import ValidationError

E = TypeVar("E", bound=Enum)

_UTC = timezone.utc


def identifier(field: str, value: object) -> str:
    """A non-empty key of at most 64 printable characters with no surrounding white space.

    Keys match exactly (case and trailing spaces count) on every backend; refusing surrounding
    white space keeps MySQL's PAD SPACE comparison from ever mattering.
    """
    if type(value) is not str:
        raise ValidationError(field, "must be a string", value)
    if not value:
        raise ValidationError(field, "must not be empty", value)
    if len(value) > limits.ID_MAX:
        raise ValidationError(field, f"at most {limits.ID_MAX} characters", value)
    if not value.isprintable():
        raise ValidationError(field, "printable characters only", value)
    if value[0].isspace() or value[-1].isspace():
        raise ValidationError(field, "no leading or trailing white space", value)
    return value


def optional_identifier(field: str, value: object) -> str | None:
    return None if value is None else identifier(field, value)


def text(field: str, value: object, max_chars: int, *, allow_empty: bool = True) -> str:
    """A string of at most ``max_chars`` characters (VARCHAR counts characters)."""
    if type(value) is not str:
        raise ValidationError(field, "must be a string", value)
    if not allow_empty and not value.strip():
        raise ValidationError(field, "must not be empty", value)
    if len(value) > max_chars:
        raise ValidationError(field, f"at most {max_chars} characters", value)
    _encodable(field, value)
    return value


def long_text(field: str, value: object) -> str | None:
    """An optional TEXT value: at most 65,535 bytes of UTF-8."""
    if value is None:
        return None
    if type(value) is not str:
        raise ValidationError(field, "must be a string", value)
    if len(value) * 4 > limits.TEXT_MAX_BYTES or not value.isascii():
        size = len(_encodable(field, value))
        if size > limits.TEXT_MAX_BYTES:
            raise ValidationError(field, f"at most {limits.TEXT_MAX_BYTES} bytes of UTF-8", value)
    return value


def _encodable(field: str, value: str) -> bytes:
    try:
        return value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValidationError(field, "valid Unicode (no lone surrogates)", value) from None


def integer(
    field: str, value: object, minimum: int = limits.INT_MIN, maximum: int = limits.INT_MAX
) -> int:
    if type(value) is not int:
        # bool is an int subclass; a True timeout is a bug, not a 1.
        if not (isinstance(value, int) and not isinstance(value, bool)):
            raise ValidationError(field, "must be an integer", value)
        value = int(value)
    if value < minimum or value > maximum:
        raise ValidationError(field, f"must be between {minimum} and {maximum}", value)
    return value


def boolean(field: str, value: object) -> bool:
    if type(value) is not bool:
        raise ValidationError(field, "must be a bool", value)
    return value


def decimal(field: str, value: object, minimum: Decimal) -> Decimal:
    """A DECIMAL(10,2) value; refuses what would be rounded rather than rounding it silently."""
    if isinstance(value, bool) or not isinstance(value, (int, float, Decimal, str)):
        raise ValidationError(field, "must be a number", value)
    try:
        number = Decimal(str(value)) if isinstance(value, float) else Decimal(value)
    except InvalidOperation:
        raise ValidationError(field, "must be a number", value) from None
    if not number.is_finite():
        raise ValidationError(field, "must be finite", value)
    try:
        places = number.quantize(limits.DECIMAL_PLACES)
    except InvalidOperation:
        # Too many digits to quantize in the context's precision: far out of range anyway.
        places = None
    if places is not None and number != places:
        raise ValidationError(field, "at most 2 decimal places", value)
    if places is None or number < minimum or number > limits.DECIMAL_MAX:
        raise ValidationError(field, f"must be between {minimum} and {limits.DECIMAL_MAX}", value)
    return places


def enum_member(field: str, enum_type: type[E], value: object) -> E:
    if isinstance(value, enum_type):
        return value
    # True, 1.0 and Decimal(1) equal a member's value; a bool or a float here is a bug.
    if isinstance(value, (str, int)) and not isinstance(value, bool):
        try:
            return enum_type(value)
        except ValueError:
            pass
    allowed = ", ".join(repr(m.value) for m in enum_type)
    raise ValidationError(field, f"one of {allowed}", value)


def optional_enum(field: str, enum_type: type[E], value: object) -> E | None:
    return None if value is None else enum_member(field, enum_type, value)


def timestamp(field: str, value: object) -> datetime:
    """An aware datetime inside TIMESTAMP's range, normalised to UTC whole seconds.

    TIMESTAMP keeps whole seconds on MySQL; dropping the fraction here makes every backend
    store and return the same instant.
    """
    if not isinstance(value, datetime):
        raise ValidationError(field, "must be a datetime", value)
    offset = value.utcoffset()
    if offset is None:
        raise ValidationError(field, "must be timezone-aware", value)
    try:
        utc = value.astimezone(_UTC) if offset else value
    except OverflowError:  # e.g. datetime.min at +05:00 is before year 1 in UTC
        raise _outside_timestamp(field, value) from None
    if utc.microsecond:
        utc = utc.replace(microsecond=0)
    if utc.tzinfo is not _UTC:
        utc = utc.replace(tzinfo=_UTC)
    if utc < limits.TIMESTAMP_MIN or utc > limits.TIMESTAMP_MAX:
        raise _outside_timestamp(field, value)
    return utc


def _outside_timestamp(field: str, value: object) -> ValidationError:
    low, high = limits.TIMESTAMP_MIN.isoformat(), limits.TIMESTAMP_MAX.isoformat()
    return ValidationError(field, f"must be between {low} and {high}", value)


def optional_timestamp(field: str, value: object) -> datetime | None:
    return None if value is None else timestamp(field, value)


_SCALARS = (str, int, float, bool, type(None))
_DEPTH_LIMIT = (
    f"JSON nesting at most {limits.JSON_MAX_DEPTH} levels deep, counting the values "
    "inside the innermost array or object"
)


def json_document(field: str, value: object) -> Any:
    """A JSON-serializable value that round-trips unchanged, within the size and depth limits.

    Python ``None`` means SQL NULL. Containers must be dicts with string keys and lists;
    tuples, sets, non-string keys, NaN and infinities are refused rather than silently changed.
    Depth counts the values inside the innermost container as a level, as MariaDB does: its
    ``json_valid`` refuses a 32nd nested array or object, so at most 31 containers nest.
    """
    if value is None:
        return None
    if type(value) is dict and _flat_bound(value) <= limits.JSON_MAX_BYTES:
        return value
    # An upper bound of the encoded size, summed on the way: only a document that might be
    # too large is encoded to measure it exactly (most are far below the limit).
    bound = 0
    stack: list[tuple[object, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        kind = type(item)
        if kind is dict:
            if depth >= limits.JSON_MAX_DEPTH:
                raise ValidationError(field, _DEPTH_LIMIT, value)
            bound += 2 + 2 * len(item)  # type: ignore[arg-type]  # braces, colons, commas
            for key, child in item.items():  # type: ignore[attr-defined]
                if type(key) is not str:
                    raise ValidationError(field, "JSON object keys must be strings", value)
                stack.append((key, depth))
                stack.append((child, depth + 1))
        elif kind is list:
            if depth >= limits.JSON_MAX_DEPTH:
                raise ValidationError(field, _DEPTH_LIMIT, value)
            bound += 2 + len(item)  # type: ignore[arg-type]  # brackets and commas
            stack.extend((child, depth + 1) for child in item)  # type: ignore[attr-defined]
        elif kind is float:
            if not math.isfinite(item):  # type: ignore[arg-type]
                raise ValidationError(field, "JSON numbers must be finite", value)
            bound += 25  # repr of a float is at most 24 characters
        elif kind is str:
            if not item.isascii():  # type: ignore[attr-defined]
                _encodable(field, item)  # type: ignore[arg-type]
            # Quotes, and per character at most 6 bytes (a \uXXXX escape) or 4 (UTF-8).
            bound += 2 + 6 * len(item)  # type: ignore[arg-type]
        elif kind is int:
            bound += 2 + item.bit_length() // 3  # type: ignore[attr-defined]  # sign, digits
        elif kind not in _SCALARS:
            raise ValidationError(
                field, "JSON-serializable (dict, list, str, int, float, bool, None)", value
            )
        else:
            bound += 5  # true, false, null
    if bound > limits.JSON_MAX_BYTES:
        size = len(dumps(value).encode("utf-8"))
        if size > limits.JSON_MAX_BYTES:
            raise ValidationError(field, f"JSON at most {limits.JSON_MAX_BYTES} bytes", value)
    return value


# One encoder for the process: json.dumps with any option builds a new JSONEncoder per call,
# and every task written encodes its payload.
_ENCODER = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":"))


def _flat_bound(document: dict[Any, Any]) -> int:
    """The size bound of the walk below, for the common payload: one object of string keys
    and plain ASCII, integer, boolean or null values. Anything else returns a bound past the
    limit, so the full walk checks it (and raises the precise error)."""
    bound = 2
    for key, item in document.items():
        kind = type(item)
        if type(key) is not str or not key.isascii():
            return _NOT_FLAT
        if kind is str and item.isascii():
            bound += 6 * len(item)
        elif kind is int:
            bound += item.bit_length() // 3
        elif item is not None and kind is not bool:
            return _NOT_FLAT
        bound += 6 * len(key) + 10  # quotes, colon, comma, and up to 5 for the value
    return bound


_NOT_FLAT = limits.JSON_MAX_BYTES + 1


def dumps(value: object) -> str:
    """The one JSON encoding used for every JSON column, on every backend."""
    return _ENCODER.encode(value)


def string_list(
    field: str, value: object, item_check: Callable[[str, object], str]
) -> list[str] | None:
    if value is None:
        return None
    if not isinstance(value, (list, tuple)):
        raise ValidationError(field, "must be a list of strings", value)
    items = [item_check(f"{field}[{i}]", item) for i, item in enumerate(value)]
    json_document(field, items)
    return items
