"""MongoDB Extended JSON v2 (relaxed and canonical) -> plain JSON values.

Dates become :class:`Date`, a ``str`` holding ISO-8601 UTC with milliseconds
(``2021-07-09T20:12:19.795Z``). Because every date has that one fixed-width form, two dates
compare as strings exactly as they compare in time, and ``Date`` stays distinguishable from a
plain string for MongoDB's type ordering. orjson serializes it as the string it is.
"""

from __future__ import annotations

import base64
import math
from datetime import UTC, datetime, timedelta
from typing import Any

__all__ = ["Date", "EJsonError", "date_from_iso", "date_from_ms", "decode"]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MIN_MS = -62135596800000  # 0001-01-01T00:00:00.000Z
_MAX_MS = 253402300799999  # 9999-12-31T23:59:59.999Z


class EJsonError(ValueError):
    """A value that claims to be Extended JSON but is not valid."""


class Date(str):
    """A BSON date, held as its ISO-8601 UTC millisecond string."""

    __slots__ = ()


def date_from_ms(ms: int) -> Date:
    """The Date ``ms`` milliseconds after the epoch; EJsonError when out of range."""
    if not _MIN_MS <= ms <= _MAX_MS:
        raise EJsonError(f"date out of range: {ms} ms")
    dt = _EPOCH + timedelta(milliseconds=ms)
    return Date(
        f"{dt.year:04d}-{dt.month:02d}-{dt.day:02d}T{dt.hour:02d}:{dt.minute:02d}:"
        f"{dt.second:02d}.{dt.microsecond // 1000:03d}Z"
    )


def date_from_iso(text: str) -> Date:
    """Parse an ISO-8601 date or date-time (offset, ``Z`` or none = UTC) into a Date."""
    if not isinstance(text, str) or not 10 <= len(text) <= 40:
        raise EJsonError(f"not an ISO-8601 date: {text!r}")
    try:
        dt = datetime.fromisoformat(text)
    except ValueError:
        raise EJsonError(f"not an ISO-8601 date: {text!r}") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    try:
        delta = dt - _EPOCH
    except OverflowError:  # pragma: no cover - fromisoformat bounds the year already
        raise EJsonError(f"date out of range: {text!r}") from None
    ms = (delta.days * 86_400 + delta.seconds) * 1000 + delta.microseconds // 1000
    return date_from_ms(ms)


_INT_LIMITS = {"$numberInt": 1 << 31, "$numberLong": 1 << 63}


def _int(text: Any, name: str) -> int:
    if isinstance(text, str) and text.strip() == text and 0 < len(text) <= 21:
        try:
            value = int(text, 10)
        except ValueError:
            pass
        else:
            limit = _INT_LIMITS[name]
            if -limit <= value < limit:
                return value
            raise EJsonError(f"{name} out of range: {text}")
    raise EJsonError(f"{name} expects a decimal integer string, got {text!r}")


def _double(text: Any) -> float | None:
    if not isinstance(text, str):
        raise EJsonError(f"$numberDouble expects a string, got {text!r}")
    try:
        value = float(text)
    except ValueError:
        raise EJsonError(f"$numberDouble expects a number string, got {text!r}") from None
    # JSON has no NaN or infinities: they become null, as orjson would write them anyway.
    return value if math.isfinite(value) else None


def _date(value: Any) -> Date:
    if isinstance(value, str):
        return date_from_iso(value)
    if isinstance(value, dict) and len(value) == 1 and "$numberLong" in value:
        return date_from_ms(_int(value["$numberLong"], "$numberLong"))
    if isinstance(value, int) and not isinstance(value, bool):
        return date_from_ms(value)
    if isinstance(value, float) and value.is_integer():
        return date_from_ms(int(value))
    raise EJsonError(f"$date expects an ISO string, $numberLong or milliseconds, got {value!r}")


def _wrapper(key: str, obj: dict[str, Any]) -> Any:
    """Convert a one-key (or known two-key) type wrapper; KeyError when it is none."""
    n = len(obj)
    value = obj[key]
    if n == 1:
        if key == "$date":
            return _date(value)
        if key == "$oid":
            if isinstance(value, str) and len(value) == 24:
                try:
                    bytes.fromhex(value)
                except ValueError:
                    pass
                else:
                    return value.lower()
            raise EJsonError(f"$oid expects 24 hex digits, got {value!r}")
        if key in ("$numberLong", "$numberInt"):
            return _int(value, key)
        if key == "$numberDouble":
            return _double(value)
        if key == "$numberDecimal":
            return _double(value)
        if key == "$binary":
            if isinstance(value, dict) and isinstance(value.get("base64"), str):
                return value["base64"]
            raise EJsonError(f"$binary expects {{base64, subType}}, got {value!r}")
        if key == "$uuid":
            if isinstance(value, str):
                return value
            raise EJsonError(f"$uuid expects a string, got {value!r}")
        if key == "$timestamp":
            if isinstance(value, dict) and isinstance(value.get("t"), int):
                return value["t"]
            raise EJsonError(f"$timestamp expects {{t, i}}, got {value!r}")
        if key in ("$minKey", "$maxKey", "$undefined"):
            return None
        if key in ("$symbol", "$code"):
            if isinstance(value, str):
                return value
            raise EJsonError(f"{key} expects a string, got {value!r}")
    elif n == 2 and key == "$binary" and "$type" in obj:  # legacy extended JSON
        if isinstance(value, str):
            base64.b64decode(value, validate=False)
            return value
        raise EJsonError(f"$binary expects a base64 string, got {value!r}")
    raise KeyError(key)


def decode(value: Any) -> Any:
    """Return ``value`` (parsed JSON) with every Extended JSON wrapper converted.

    Objects whose keys start with ``$`` but are no known wrapper are kept as they are; a known
    wrapper holding a bad value raises :class:`EJsonError`. Runs in O(size of the value).
    """
    if isinstance(value, dict):
        if value:
            first = next(iter(value))
            if first[:1] == "$":
                try:
                    return _wrapper(first, value)
                except KeyError:
                    pass
        return {k: decode(v) if isinstance(v, dict | list) else v for k, v in value.items()}
    if isinstance(value, list):
        return [decode(v) if isinstance(v, dict | list) else v for v in value]
    return value
