"""MongoDB's cross-type sort order as int64 order codes: the one place that defines it.

MongoDB orders values of a field as: missing/null < numbers < strings < objects < arrays <
booleans < dates. Every sortable value gets an int64 *code* such that codes compare as the values
do and equal values (``1`` and ``1.0``) share a code. The code space is cut into bands:

======================  =============================================================
band                    code
======================  =============================================================
null / missing          ``NULL`` (the lowest int64)
NaN                     ``NAN`` (MongoDB puts NaN below every other number)
huge negative numbers   dictionary codes in ``(NAN, -NUM_MAX)`` (exact, see below)
numbers, abs <= 2**53   the number's float64 bits as a monotone int64, ``[-NUM_MAX, NUM_MAX]``
huge positive numbers   dictionary codes in ``(NUM_MAX, DICT_LO)``
strings .. booleans     dictionary codes in ``[DICT_LO, DICT_HI)``, ranked by :func:`rank_key`
dates                   ``DATE0 + milliseconds since the epoch``
======================  =============================================================

*Direct* codes (null, numbers within 2**53, dates) are computed from the value alone, in O(1).
*Dictionary* codes depend on the other values of the field and are assigned by
:mod:`service.core.store.codes`; :func:`rank_key` gives the Python key they are ranked by.
"""

from __future__ import annotations

import struct
from datetime import date
from typing import Any

import orjson

from service.core.ejson import Date, date_ms_of

__all__ = [
    "DATE0",
    "DICT_HI",
    "DICT_LO",
    "NAN",
    "NULL",
    "NUM_MAX",
    "date_ms",
    "direct_code",
    "rank_key",
    "value_at",
]

NULL = -(1 << 63)
NAN = NULL + 1
#: Codes of numbers within 2**53 (exact in a float64, ints included) lie in [-NUM_MAX, NUM_MAX].
NUM_MAX = 1076 << 52  # the float64 bits of 2.0**53
DICT_LO = 5 << 60
DATE0 = (1 << 63) - (1 << 50)
DICT_HI = DATE0 - (1 << 49)  # below every date: the earliest, year 1, is about -2**45.8 ms
#: The dictionary bands: (low, high) exclusive bounds of the codes each rank range may take.
NEG_BAND = (NAN + (1 << 40), -NUM_MAX)
POS_BAND = (NUM_MAX, DICT_LO)
STR_BAND = (DICT_LO, DICT_HI)

_MISSING = object()
_pack = struct.Struct("<d").pack
_unpack = struct.Struct("<q").unpack
_DAY_MS = 86_400_000
_EPOCH = date(1970, 1, 1).toordinal()
_day_ms: dict[str, int] = {}


def date_ms(value: str) -> int:
    """Milliseconds since the epoch of a Date (``YYYY-MM-DDTHH:MM:SS.mmmZ``). O(1)."""
    known = date_ms_of(value)
    if known is not None:
        return known
    day = value[:10]
    base = _day_ms.get(day)
    if base is None:
        base = (date.fromisoformat(day).toordinal() - _EPOCH) * _DAY_MS
        if len(_day_ms) < 1 << 16:
            _day_ms[day] = base
    return (
        base
        + int(value[11:13]) * 3_600_000
        + int(value[14:16]) * 60_000
        + int(value[17:19]) * 1000
        + int(value[20:23])
    )


def _num_code(value: float) -> int:
    bits: int = _unpack(_pack(value))[0]
    return bits if bits >= 0 else -(bits & 0x7FFF_FFFF_FFFF_FFFF)


def direct_code(value: Any) -> int | None:
    """The code of ``value`` when it is direct (null, a date, a number within 2**53, NaN),
    else None (the value needs a dictionary code). O(1)."""
    t = type(value)
    if t is Date:
        return DATE0 + date_ms(value)
    if value is None:
        return NULL
    if t is int:
        if -(1 << 53) <= value <= 1 << 53:
            return _num_code(float(value))
        return None
    if t is float:
        if value != value:  # NaN
            return NAN
        if -(2.0**53) <= value <= 2.0**53:
            return _num_code(value)
        return None
    return None


def rank_key(value: Any) -> tuple[int, Any]:
    """The Python key that orders dictionary-coded values among themselves as MongoDB does:
    huge numbers by value, strings by code point, objects and arrays by their canonical JSON
    bytes, booleans false < true. Its first item says the band (see :func:`band`)."""
    t = type(value)
    if t is str:
        return (2, value)
    if t is bool:
        return (5, value)
    if t is int or t is float:
        return (1, value)
    if t is dict:
        return (3, orjson.dumps(value, option=orjson.OPT_SORT_KEYS))
    if t is list:
        return (4, orjson.dumps(value, option=orjson.OPT_SORT_KEYS))
    if isinstance(value, str):  # another str subclass, as a plain string
        return (2, str(value))
    raise TypeError(f"unsortable value {value!r}")


def band(key: tuple[int, Any]) -> tuple[int, int]:
    """The (low, high) exclusive code bounds for a dictionary-coded value's key."""
    rank, value = key
    if rank == 1:
        return NEG_BAND if value < 0 else POS_BAND
    return STR_BAND


def value_at(room: dict[str, Any], parts: tuple[str, ...]) -> Any:
    """The value at a dotted path through dicts only; None when missing (MongoDB sorts a
    missing field as null)."""
    value: Any = room
    for part in parts:
        if type(value) is not dict:
            return None
        value = value.get(part)
    return value
