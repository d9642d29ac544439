"""MongoDB Extended JSON v2 (relaxed and canonical) -> plain JSON values.

Dates become :class:`Date`, a ``str`` holding ISO-8601 UTC with milliseconds
(``2021-07-09T20:12:19.795Z``). Because every date has that one fixed-width form, two dates
compare as strings exactly as they compare in time, and ``Date`` stays distinguishable from a
plain string for MongoDB's type ordering. orjson serializes it as the string it is.
"""

from __future__ import annotations

import base64
import binascii
import math
import re
from datetime import UTC, date, datetime, timedelta
from typing import Any

import orjson

__all__ = [
    "TAG",
    "Date",
    "EJsonError",
    "date_from_iso",
    "date_from_ms",
    "date_ms_of",
    "decode",
    "may_hold_wrappers",
    "parse_tagged",
    "recent_ms",
    "untag",
]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_EPOCH_DAY = date(1970, 1, 1)
_MIN_MS = -62135596800000  # 0001-01-01T00:00:00.000Z
_MAX_MS = 253402300799999  # 9999-12-31T23:59:59.999Z
_DAY_MS = 86_400_000

# The canonical form splits into a day ("2021-07-09T") and a time ("20:12:19.795Z"). Days are
# few in any real data set, so each is validated (or formatted) once and remembered; the caches
# stop growing at _DAYS_KEPT entries (a few MB), after which new days take the slow path.
_DAYS_KEPT = 1 << 16
_DAY = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T")
_TIME = re.compile(r"(?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9]\.[0-9]{3}Z")
_valid_days: set[str] = set()
_day_prefixes: dict[int, str] = {}
# The rest of a formatted date, looked up rather than formatted: "20:12:", "19.", "795Z".
_HH_MM = tuple(f"{h:02d}:{m:02d}:" for h in range(24) for m in range(60))
_SS = tuple(f"{s:02d}." for s in range(60))
_MMM = tuple(f"{ms:03d}Z" for ms in range(1000))


class EJsonError(ValueError):
    """A value that claims to be Extended JSON but is not valid."""


class Date(str):
    """A BSON date, held as its ISO-8601 UTC millisecond string."""

    __slots__ = ()


def date_from_ms(ms: int) -> Date:
    """The Date ``ms`` milliseconds after the epoch; EJsonError when out of range."""
    if not _MIN_MS <= ms <= _MAX_MS:
        raise EJsonError(f"date out of range: {ms} ms")
    days, ms = divmod(ms, _DAY_MS)
    prefix = _day_prefixes.get(days)
    if prefix is None:
        prefix = f"{(_EPOCH_DAY + timedelta(days=days)).isoformat()}T"
        if len(_day_prefixes) < _DAYS_KEPT:
            _day_prefixes[days] = prefix
    minutes, ms = divmod(ms, 60_000)
    seconds, ms = divmod(ms, 1000)
    return Date(f"{prefix}{_HH_MM[minutes]}{_SS[seconds]}{_MMM[ms]}")


def _is_canonical(text: str) -> bool:
    """Whether ``text`` is exactly ``YYYY-MM-DDTHH:MM:SS.mmmZ`` naming a real instant."""
    if len(text) != 24 or not _TIME.fullmatch(text, 11):
        return False
    day = text[:11]
    if day in _valid_days:
        return True
    if not _DAY.fullmatch(day):
        return False
    try:
        date.fromisoformat(text[:10])  # the calendar: year 0001.., month lengths, leap days
    except ValueError:
        return False
    if len(_valid_days) < _DAYS_KEPT:
        _valid_days.add(day)
    return True


def date_from_iso(text: str) -> Date:
    """Parse an ISO-8601 date or date-time (offset, ``Z`` or none = UTC) into a Date."""
    if not isinstance(text, str) or not 10 <= len(text) <= 40:
        raise EJsonError(f"not an ISO-8601 date: {text!r}")
    if _is_canonical(text):  # the form every date is stored in: already what we return
        return Date(text)
    return _parse_iso(text)


def _parse_iso(text: str) -> Date:
    """The general path of :func:`date_from_iso`: every form ``datetime.fromisoformat`` reads."""
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
            try:
                base64.b64decode(value, validate=False)
            except (ValueError, binascii.Error):  # non-ASCII text, or bad padding
                raise EJsonError(f"$binary expects a base64 string, got {value!r}") from None
            return value
        raise EJsonError(f"$binary expects a base64 string, got {value!r}")
    raise KeyError(key)


def may_hold_wrappers(raw: bytes) -> bool:
    """False when the JSON text ``raw`` certainly has no key starting with ``$``, so that
    :func:`decode` of it would change nothing. O(len(raw)), a byte search."""
    return b'"$' in raw or b'"\\u0024' in raw


def decode(value: Any) -> Any:
    """Return ``value`` (parsed JSON) with every Extended JSON wrapper converted.

    Objects whose keys start with ``$`` but are no known wrapper are kept as they are; a known
    wrapper holding a bad value raises :class:`EJsonError`. Containers are copied, never
    changed in place. Runs in O(size of the value).
    """
    if isinstance(value, dict):
        return _object(value)
    if isinstance(value, list):
        return [decode(item) for item in value]
    return value


def _object(obj: dict[str, Any]) -> Any:
    """The hot path of a snapshot load and of feed events: ``obj`` copied in C, then only the
    values that change replaced; exact type() checks first (JSON parsers make exact types), and
    the common dates (a nested ``{"$date": <ms>}`` as the broker writes them, or a canonical
    ISO string) converted in the loop, without a call per wrapper."""
    for first in obj:
        if first[:1] == "$":
            if first == "$date" and len(obj) == 1:
                value = obj[first]
                kind = type(value)
                if kind is str and _is_canonical(value):
                    return Date(value)
                if kind is int:  # as Rocket.Chat's broker writes dates
                    return _broker_date(value)
            try:
                return _wrapper(first, obj)
            except KeyError:
                pass
        break
    out = dict(obj)
    for key, value in obj.items():
        kind = type(value)
        if kind is dict:
            if len(value) == 1 and type(inner := value.get("$date")) is int:
                out[key] = _broker_date(inner)
            else:
                out[key] = _object(value)
        elif kind is list:
            out[key] = [_object(v) if type(v) is dict else decode(v) for v in value]
        elif kind is not str and kind is not int and isinstance(value, dict | list):
            out[key] = decode(value)
    return out


#: Dates made from milliseconds lately, both ways (see :func:`date_ms_of`): an event repeats
#: its room's dates (``lm``, ``_updatedAt`` and ``closedAt`` are often one instant).
_recent_ms: dict[str, int] = {}
_recent_dates: dict[int, Date] = {}
#: :func:`date_ms_of`'s table itself, for a caller looking up many (never replaced, only cleared)
recent_ms = _recent_ms


def _broker_date(ms: int) -> Date:
    found = _recent_dates.get(ms)
    if found is None:
        found = date_from_ms(ms)
        if len(_recent_dates) >= _DAYS_KEPT:
            _recent_dates.clear()
            _recent_ms.clear()
        _recent_dates[ms] = found
        _recent_ms[found] = ms
    return found


def date_ms_of(value: str) -> int | None:
    """The milliseconds of a Date decoded lately from ``{"$date": <ms>}`` (None when not
    remembered): spares parsing back the text just formatted. O(1)."""
    return _recent_ms.get(value)


# -- the tagged parse: a bulk load's fast path ----------------------------------------------
#: A Date read by :func:`parse_tagged` is the str TAG + its ISO text: one C-level parse, no walk.
TAG = "\x00D"
_OPEN = b'{"$date":"'
_TAGGED = b'"\\u0000D'  # TAG as orjson writes it inside a string
_ISO_RUN = re.compile(rb"(?:[0-9]{4}-[0-9]{2}-[0-9]{2}T" + _TIME.pattern.encode() + rb")+")


def parse_tagged(raw: bytes) -> Any:
    """``orjson.loads(raw)`` with every canonical ``{"$date": "YYYY-MM-DDTHH:MM:SS.mmmZ"}``
    read as the str ``TAG + iso``, without walking the document in Python.

    None when the fast path does not apply (any other wrapper or date form, or a NUL already
    in the text): the caller then uses :func:`decode`. Raises orjson.JSONDecodeError for bad
    JSON. O(len(raw)) in C, plus a set check of the dates' days.

    Each date's opening ``{"$date":"`` becomes the tag and its closing ``Z"}`` becomes ``Z"``;
    the text qualifies only when it held exactly as many ``Z"}`` as dates (so no other one was
    touched) and every tagged text is a canonical date."""
    if b"\\u0000" in raw:
        return None
    dates = raw.count(_OPEN)
    if dates:
        if raw.count(b'Z"}') != dates:
            return None
        raw = raw.replace(_OPEN, _TAGGED).replace(b'Z"}', b'Z"')
        isos = _TAGGED_TEXT.findall(raw)
        if len(isos) != dates or not _ISO_RUN.fullmatch(b"".join(isos)):
            return None
        days = {iso[:11] for iso in isos}
        if not days <= _valid_day_bytes and not all(map(_known_day, days)):
            return None
    if b'"$' in raw or b'"\\u0024' in raw:
        return None
    return orjson.loads(raw)


_TAGGED_TEXT = re.compile(rb'"\\u0000D([^"]*)"')
_valid_day_bytes: set[bytes] = set()


def _known_day(day: bytes) -> bool:
    """Whether ``day`` (``YYYY-MM-DDT``) is a real calendar day; remembered once true."""
    if _is_canonical(day.decode() + "00:00:00.000Z"):
        if len(_valid_day_bytes) < _DAYS_KEPT:
            _valid_day_bytes.add(day)
        return True
    return False


def untag(doc_bytes: bytes) -> bytes:
    """orjson bytes of a tagged document -> the bytes of the decoded one (dates as strings)."""
    return doc_bytes.replace(_TAGGED, b'"')
