"""Tests for service.core.query.parse: every form and every 400 shape of contract section 1."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from service.core.ejson import Date
from service.core.errors import ApiError, InvalidDate, InvalidFields, InvalidParams, InvalidSort
from service.core.query import (
    SORTABLE_FIELDS,
    DateRange,
    ParseCache,
    Parsed,
    Projection,
    QueryLimits,
    RoomQuery,
    parse,
)

Pairs = list[tuple[str, str]]


def q(query: str) -> Pairs:
    """Pairs as the web layer passes them: split on & and the first =, no percent-decoding."""
    if not query:
        return []
    return [(k, v) for k, _, v in (item.partition("=") for item in query.split("&"))]


def params_error(message: str) -> dict[str, Any]:
    return {"success": False, "error": f"{message} [invalid-params]", "errorType": "invalid-params"}


def sort_error(raw: str) -> dict[str, Any]:
    return {
        "success": False,
        "error": f'Invalid sort parameter provided: "{raw}" [error-invalid-sort]',
        "errorType": "error-invalid-sort",
        "details": {"helperMethod": "parseJsonQuery"},
    }


def fields_error(raw: str) -> dict[str, Any]:
    return {
        "success": False,
        "error": f'Invalid fields parameter provided: "{raw}" [error-invalid-fields]',
        "errorType": "error-invalid-fields",
        "details": {"helperMethod": "parseJsonQuery"},
    }


def date_error(param: str) -> dict[str, Any]:
    return {"success": False, "error": f'The "{param}" query parameter must be a valid date.'}


def error_of(pairs: Pairs, body: dict[str, Any] | None = None, **limits: Any) -> ApiError:
    with pytest.raises(ApiError) as info:
        parse(pairs, body, QueryLimits(**limits))
    assert info.value.status == 400
    return info.value


D = Date


def with_list(name: str, values: tuple[str, ...]) -> RoomQuery:
    return RoomQuery(agents=values) if name == "agents" else RoomQuery(tags=values)


def outcome(pairs: Pairs, body: dict[str, Any] | None = None) -> RoomQuery | ApiError:
    try:
        return parse(pairs, body)
    except ApiError as err:
        return err


# --- defaults -----------------------------------------------------------------------------


def test_no_parameters_gives_the_defaults() -> None:
    assert parse([]) == RoomQuery()
    assert parse([]) == RoomQuery(
        agents=None, open=None, offset=0, count=50, sort=(("ts", -1),), fields=None
    )
    assert parse([], {}) == RoomQuery()


def test_room_query_is_hashable_and_equal_for_equal_requests() -> None:
    a = parse(q('agents=a&sort={"ts":-1}&fields={"b":1,"a":1}'))
    b = parse(q('fields={"a":1,"b":1}&agents[]=a'))
    assert a == b
    assert hash(a) == hash(b)
    assert len({a, b}) == 1


# --- lists ----------------------------------------------------------------------------------

LIST_FORMS: list[tuple[str, tuple[str, ...]]] = [
    ("agents=a", ("a",)),
    ("agents=a&agents=b", ("a", "b")),
    ("agents[]=a", ("a",)),
    ("agents[]=a&agents[]=b", ("a", "b")),
    ("agents[0]=a&agents[1]=b", ("a", "b")),
    ("agents[1]=b&agents[0]=a", ("a", "b")),
    ("agents[10]=c&agents[9]=b&agents[007]=a", ("a", "b", "c")),
    ('agents=["a","b"]', ("a", "b")),
    ('agents[]=["a","b"]', ("a", "b")),
    ("agents=[]", ()),
    ('agents=["a"]&agents=b&agents[]=c', ("a", "b", "c")),
    # indexed values form one block at the place of the first of them, ordered by index
    ("agents=x&agents[1]=b&agents=y&agents[0]=a", ("x", "a", "b", "y")),
    ("agents[0]=a&agents[0]=b", ("a", "b")),
    ("agents=", ("",)),
    ("agents=a&agents=a", ("a", "a")),
]


@pytest.mark.parametrize(("query", "expected"), LIST_FORMS)
@pytest.mark.parametrize("name", ["agents", "tags"])
def test_list_forms(name: str, query: str, expected: tuple[str, ...]) -> None:
    result = parse(q(query.replace("agents", name)))
    assert result == with_list(name, expected)


@pytest.mark.parametrize(
    "value",
    ["[", "[1]", '["a",1]', '[["a"]]', "[]x", "[null]", '["a"', "[a]"],
)
@pytest.mark.parametrize("name", ["agents", "tags"])
def test_list_value_starting_with_bracket_must_be_a_json_array_of_strings(
    name: str, value: str
) -> None:
    err = error_of([(name, value)])
    assert err.body() == params_error(f"'{name}' must be a JSON array of strings")


def test_list_value_not_starting_with_bracket_is_one_literal_element() -> None:
    assert parse([("tags", ' ["a"]')]).tags == (' ["a"]',)
    assert parse([("tags", '{"a":1}')]).tags == ('{"a":1}',)


@pytest.mark.parametrize("name", ["agents", "tags"])
def test_list_at_the_limit_is_accepted_and_above_it_refused(name: str) -> None:
    ok = [(name, f"u{i}") for i in range(500)]
    assert parse(ok) == with_list(name, tuple(f"u{i}" for i in range(500)))
    expected = params_error(f"'{name}' must NOT have more than 500 items")
    assert error_of([*ok, (name, "x")]).body() == expected
    as_json = [(name, orjson.dumps([f"u{i}" for i in range(501)]).decode())]
    assert error_of(as_json).body() == expected
    mixed = [(f"{name}[]", "a"), (name, orjson.dumps(["b"] * 500).decode())]
    assert error_of(mixed).body() == expected
    assert error_of([], {name: ["a"] * 501}).body() == expected


def test_list_limit_is_a_setting() -> None:
    assert parse(q("agents=a&agents=b"), limits=QueryLimits(max_list=2)).agents == ("a", "b")
    err = error_of(q("agents=a&agents=b&agents=c"), max_list=2)
    assert err.body() == params_error("'agents' must NOT have more than 2 items")


# --- ranges ---------------------------------------------------------------------------------

JAN1 = D("2021-01-01T00:00:00.000Z")
FEB1 = D("2021-02-01T00:00:00.000Z")

RANGE_FORMS: list[tuple[str, DateRange | None]] = [
    ('{"start":"2021-01-01","end":"2021-02-01"}', DateRange(JAN1, FEB1)),
    ('{"start":"2021-01-01"}', DateRange(JAN1, None)),
    ('{"end":"2021-02-01T00:00:00Z"}', DateRange(None, FEB1)),
    ('{"start":"2021-01-01T00:00:00","end":null}', DateRange(JAN1, None)),
    ('{"start":"2021-01-01T02:00:00+02:00"}', DateRange(JAN1, None)),
    ('{"start":"2021-01-01T00:00:00.123456Z"}', DateRange(D("2021-01-01T00:00:00.123Z"), None)),
    ('{"start":"2021-01-01T00:00:00.5-01:00"}', DateRange(D("2021-01-01T01:00:00.500Z"), None)),
    ('{"start":"","end":null}', None),
    ("{}", None),
    ('{"start":null,"end":null}', None),
    ("", None),
]


@pytest.mark.parametrize(("value", "expected"), RANGE_FORMS)
def test_range_json_forms(value: str, expected: DateRange | None) -> None:
    assert parse([("createdAt", value)]).created == expected
    assert parse([("closedAt", value)]).closed == expected
    assert parse([], {"createdAt": value}).created == expected
    if value:
        assert parse([], {"closedAt": orjson.loads(value)}).closed == expected


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("createdAt[start]=2021-01-01", DateRange(JAN1, None)),
        ("createdAt[end]=2021-02-01T00:00:00Z", DateRange(None, FEB1)),
        ("createdAt[start]=2021-01-01&createdAt[end]=2021-02-01", DateRange(JAN1, FEB1)),
        ("createdAt[end]=2021-02-01&createdAt[start]=2021-01-01", DateRange(JAN1, FEB1)),
        ("createdAt[start]=2021-01-01&createdAt[end]=null", DateRange(JAN1, None)),
        ("createdAt[start]=2021-01-01&createdAt[end]=", DateRange(JAN1, None)),
        ("createdAt[start]=&createdAt[end]=", None),
        ('createdAt={"start":"2021-01-01"}&createdAt[end]=2021-02-01', DateRange(JAN1, FEB1)),
    ],
)
def test_range_bracket_forms(query: str, expected: DateRange | None) -> None:
    assert parse(q(query)).created == expected
    assert parse(q(query.replace("createdAt", "closedAt"))).closed == expected


@pytest.mark.parametrize("name", ["createdAt", "closedAt"])
@pytest.mark.parametrize(
    ("value", "param"),
    [
        ('{"start":"yesterday"}', "start"),
        ('{"end":"2021-13-01"}', "end"),
        ('{"start":"2021-01-01","end":"2021-02-30"}', "end"),
        ('{"start":5}', "start"),
        ('{"end":true}', "end"),
        ('{"start":{"$date":"2021-01-01"}}', "start"),
        ('{"start":"2021"}', "start"),
    ],
)
def test_bad_date_in_json_form(name: str, value: str, param: str) -> None:
    assert error_of([(name, value)]).body() == date_error(f"{name}.{param}")
    assert error_of([], {name: orjson.loads(value)}).body() == date_error(f"{name}.{param}")


@pytest.mark.parametrize("name", ["createdAt", "closedAt"])
@pytest.mark.parametrize("part", ["start", "end"])
@pytest.mark.parametrize("value", ["x", "2021-01-32", "01/02/2021", "2021-01-01T25:00"])
def test_bad_date_in_bracket_form(name: str, part: str, value: str) -> None:
    err = error_of([(f"{name}[{part}]", value)])
    assert isinstance(err, InvalidDate)
    assert err.body() == date_error(f"{name}.{part}")


@pytest.mark.parametrize("name", ["createdAt", "closedAt"])
@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("2021-01-01", "'{n}' must be a JSON object with optional 'start' and 'end'"),
        ('["2021-01-01"]', "'{n}' must be a JSON object with optional 'start' and 'end'"),
        ("null", "'{n}' must be a JSON object with optional 'start' and 'end'"),
        ('{"start":"2021-01-01"', "'{n}' must be a JSON object with optional 'start' and 'end'"),
        ('{"from":"2021-01-01"}', "'{n}' must NOT have additional properties 'from'"),
        ('{"start":"2021-01-01","$gt":1}', "'{n}' must NOT have additional properties '$gt'"),
    ],
)
def test_range_that_is_not_the_object_form(name: str, value: str, message: str) -> None:
    assert error_of([(name, value)]).body() == params_error(message.format(n=name))


def test_range_given_twice() -> None:
    assert error_of(q("createdAt={}&createdAt={}")).body() == params_error(
        "'createdAt' must NOT be given more than once"
    )
    assert error_of(q("closedAt[end]=2021-01-01&closedAt[end]=2021-01-02")).body() == (
        params_error("'closedAt[end]' must NOT be given more than once")
    )
    assert error_of(q('createdAt={"start":"2021-01-01"}&createdAt[start]=2021-01-01')).body() == (
        params_error("'createdAt' must NOT give 'start' more than once")
    )


@pytest.mark.parametrize("body_value", [5, True, ["2021-01-01"]])
def test_range_of_wrong_json_type_in_body(body_value: Any) -> None:
    assert error_of([], {"createdAt": body_value}).body() == params_error(
        "'createdAt' must be a JSON object with optional 'start' and 'end'"
    )


# --- open -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("open=true", True),
        ("open=false", False),
        ("Open=true", True),
        ("Open=false", False),
        # both spellings: ``open`` wins
        ("open=true&Open=false", True),
        ("Open=false&open=true", True),
        ("open=false&Open=true", False),
    ],
)
def test_open(query: str, expected: bool) -> None:
    assert parse(q(query)).open is expected


@pytest.mark.parametrize("key", ["open", "Open"])
@pytest.mark.parametrize("value", ["", "True", "1", "0", "yes", "null", " true"])
def test_bad_open(key: str, value: str) -> None:
    err = error_of([(key, value)])
    assert err.body() == params_error(
        f"'{key}' must be equal to one of the allowed values: true, false"
    )


def test_both_open_spellings_are_validated() -> None:
    err = error_of(q("open=true&Open=maybe"))
    assert err.body() == params_error(
        "'Open' must be equal to one of the allowed values: true, false"
    )


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"open": True}, True),
        ({"open": False}, False),
        ({"open": "true"}, True),
        ({"Open": False}, False),
        ({"Open": "false"}, False),
        ({"open": True, "Open": False}, True),
        ({"open": None}, None),
    ],
)
def test_open_in_body(body: dict[str, Any], expected: bool | None) -> None:
    assert parse([], body).open is expected


@pytest.mark.parametrize("value", [1, 0, "TRUE", [True], {}])
def test_bad_open_in_body(value: Any) -> None:
    assert error_of([], {"open": value}).body() == params_error(
        "'open' must be equal to one of the allowed values: true, false"
    )


def test_open_in_query_string_overrides_either_spelling_in_body() -> None:
    assert parse(q("Open=false"), {"open": True}).open is False
    assert parse(q("open=false"), {"Open": True}).open is False
    # the overridden body value is not even validated
    assert parse(q("open=true"), {"open": "garbage", "Open": 7}).open is True


# --- strings --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("queue=sales", RoomQuery(queue="sales")),
        ("queue=", RoomQuery()),
        ("visitorId=v1", RoomQuery(visitor_id="v1")),
        ("visitorId=undefined", RoomQuery()),
        ("visitorId=", RoomQuery()),
        ("roomName=A.b*(", RoomQuery(room_name="A.b*(")),
        ("roomName=", RoomQuery()),
        ("direction=inbound", RoomQuery(direction="inbound")),
        ("direction=outbound", RoomQuery(direction="outbound")),
        ("query=anything", RoomQuery()),
        ('query={"a":1}&query=x', RoomQuery()),
    ],
)
def test_string_parameters(query: str, expected: RoomQuery) -> None:
    assert parse(q(query)) == expected


@pytest.mark.parametrize("value", ["", "Inbound", "in", "both", "inbound "])
def test_bad_direction(value: str) -> None:
    assert error_of([("direction", value)]).body() == params_error(
        "'direction' must be equal to one of the allowed values: inbound, outbound"
    )


@pytest.mark.parametrize(
    "key", ["open", "Open", "queue", "visitorId", "direction", "roomName", "offset", "count"]
)
def test_scalar_given_twice(key: str) -> None:
    value = {"open": "true", "Open": "true", "direction": "inbound", "offset": "1"}.get(key, "1")
    err = error_of([(key, value), (key, value)])
    assert err.body() == params_error(f"'{key}' must NOT be given more than once")


@pytest.mark.parametrize("key", ["sort", "fields"])
def test_json_parameter_given_twice(key: str) -> None:
    assert error_of([(key, "{}"), (key, "{}")]).body() == params_error(
        f"'{key}' must NOT be given more than once"
    )


@pytest.mark.parametrize("key", ["queue", "visitorId", "roomName"])
@pytest.mark.parametrize("value", [1, True, ["a"], {"$regex": "a"}])
def test_string_of_wrong_json_type_in_body(key: str, value: Any) -> None:
    assert error_of([], {key: value}).body() == params_error(f"'{key}' must be string")


# --- unknown keys -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "key",
    [
        "foo",
        "",
        "OPEN",
        "Agents",
        "agent",
        "agents[x]",
        "agents[0][1]",
        "agents[-1]",
        "agents[ 1]",
        "tags[start]",
        "createdAt[]",
        "createdAt[0]",
        "createdAt[from]",
        "queue[]",
        "count[0]",
        "query[]",
        "visitorId[]",
        "[]",
        "agents[",
    ],
)
def test_unknown_parameter(key: str) -> None:
    err = error_of([(key, "1")])
    assert isinstance(err, InvalidParams)
    assert err.body() == params_error(f"must NOT have additional properties '{key}'")


def test_unknown_key_in_body() -> None:
    assert error_of([], {"foo": 1}).body() == params_error(
        "must NOT have additional properties 'foo'"
    )
    assert error_of([], {"agents[]": ["a"]}).body() == params_error(
        "must NOT have additional properties 'agents[]'"
    )


# --- offset and count -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "offset", "count"),
    [
        ("", 0, 50),
        ("offset=0", 0, 50),
        ("offset=10", 10, 50),
        ("offset=007", 7, 50),
        ("offset=9007199254740991", 9007199254740991, 50),
        ("count=1", 0, 1),
        ("count=100", 0, 100),
        ("count=101", 0, 100),
        ("count=" + "9" * 5000, 0, 100),
        ("count=0", 0, 50),
        ("count=000", 0, 50),
        ("offset=3&count=20", 3, 20),
    ],
)
def test_offset_and_count(query: str, offset: int, count: int) -> None:
    result = parse(q(query))
    assert (result.offset, result.count) == (offset, count)


def test_count_settings() -> None:
    infinite = QueryLimits(allow_infinite_count=True)
    assert parse(q("count=0"), limits=infinite).count is None
    assert parse(q("count=500"), limits=infinite).count == 100
    assert parse([], limits=infinite).count == 50
    custom = QueryLimits(default_count=25, max_count=1000)
    assert parse([], limits=custom).count == 25
    assert parse(q("count=0"), limits=custom).count == 25
    assert parse(q("count=999"), limits=custom).count == 999
    assert parse(q("count=1001"), limits=custom).count == 1000


@pytest.mark.parametrize("key", ["offset", "count"])
@pytest.mark.parametrize("value", ["", "-1", "+1", "1.0", "1e3", " 1", "1 ", "abc", "0x10", "١٢"])
def test_bad_offset_or_count(key: str, value: str) -> None:
    assert error_of([(key, value)]).body() == params_error(
        f"'{key}' must be a non-negative integer"
    )


def test_offset_above_the_javascript_safe_integer() -> None:
    for value in ["9007199254740992", "9" * 30]:
        assert error_of([("offset", value)]).body() == params_error(
            "'offset' must be <= 9007199254740991"
        )


@pytest.mark.parametrize(
    ("body", "offset", "count"),
    [
        ({"offset": 5, "count": 7}, 5, 7),
        ({"offset": "5", "count": "7"}, 5, 7),
        ({"count": 1000}, 0, 100),
        ({"count": 0}, 0, 50),
        ({"offset": None, "count": None}, 0, 50),
    ],
)
def test_offset_and_count_in_body(body: dict[str, Any], offset: int, count: int) -> None:
    result = parse([], body)
    assert (result.offset, result.count) == (offset, count)


@pytest.mark.parametrize("key", ["offset", "count"])
@pytest.mark.parametrize("value", [-1, 1.0, 1.5, True, "-1", [1], {}])
def test_bad_offset_or_count_in_body(key: str, value: Any) -> None:
    assert error_of([], {key: value}).body() == params_error(
        f"'{key}' must be a non-negative integer"
    )


# --- sort -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ('{"ts":-1}', (("ts", -1),)),
        ('{"ts":1}', (("ts", 1),)),
        ('{"name":1,"ts":-1}', (("name", 1), ("ts", -1))),
        ('{"ts":-1,"name":1}', (("ts", -1), ("name", 1))),
        ('{"servedBy.username":1,"v.username":-1}', (("servedBy.username", 1), ("v.username", -1))),
        ("{}", (("ts", -1),)),
        ("", (("ts", -1),)),
        (' { "msgs" : 1 } ', (("msgs", 1),)),
    ],
)
def test_sort(raw: str, expected: tuple[tuple[str, int], ...]) -> None:
    assert parse([("sort", raw)]).sort == expected


def test_every_sortable_field_sorts_both_ways() -> None:
    for field in SORTABLE_FIELDS:
        for direction in (1, -1):
            raw = orjson.dumps({field: direction}).decode()
            assert parse([("sort", raw)]).sort == ((field, direction),)


@pytest.mark.parametrize(
    "raw",
    [
        "ts",
        "{ts:1}",
        '{"ts":1',
        "[]",
        '[["ts",1]]',
        "1",
        "null",
        '"ts"',
        '{"ts":2}',
        '{"ts":0}',
        '{"ts":true}',
        '{"ts":"1"}',
        '{"ts":1.5}',
        '{"ts":1.0}',
        '{"ts":"asc"}',
        '{"password":1}',
        '{"servedBy":1}',
        '{"ts":{"$meta":"textScore"}}',
        '{"name":1,"_id":1}',
    ],
)
def test_bad_sort(raw: str) -> None:
    err = error_of([("sort", raw)])
    assert isinstance(err, InvalidSort)
    assert err.body() == sort_error(raw)


def test_sort_in_body() -> None:
    assert parse([], {"sort": {"name": 1}}).sort == (("name", 1),)
    assert parse([], {"sort": '{"name":-1}'}).sort == (("name", -1),)
    assert error_of([], {"sort": {"name": True}}).body() == sort_error('{"name":true}')
    assert error_of([], {"sort": 5}).body() == sort_error("5")
    assert error_of([], {"sort": ["ts"]}).body() == sort_error('["ts"]')


# --- fields ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ('{"name":1}', Projection(include=True, paths=("name",))),
        ('{"name":true,"ts":1}', Projection(include=True, paths=("name", "ts"))),
        ('{"ts":1,"name":1}', Projection(include=True, paths=("name", "ts"))),
        ('{"v.username":1,"_id":0}', Projection(True, ("v.username",), keep_id=False)),
        ('{"name":1,"_id":1}', Projection(include=True, paths=("name",))),
        ('{"name":0}', Projection(include=False, paths=("name",))),
        ('{"name":false,"v.token":0}', Projection(False, ("name", "v.token"))),
        ('{"name":0,"_id":0}', Projection(False, ("name",), keep_id=False)),
        ('{"name":0,"_id":1}', Projection(False, ("name",), keep_id=True)),
        ('{"_id":0}', Projection(include=False, paths=(), keep_id=False)),
        ('{"_id":1}', Projection(include=True, paths=(), keep_id=True)),
        ('{"a.b":1,"a.c":1}', Projection(include=True, paths=("a.b", "a.c"))),
        ('{"a.b":1,"ab":1}', Projection(include=True, paths=("a.b", "ab"))),
        ("{}", None),
        ("", None),
    ],
)
def test_fields(raw: str, expected: Projection | None) -> None:
    assert parse([("fields", raw)]).fields == expected


@pytest.mark.parametrize(
    "raw",
    [
        "name",
        '{"name":1',
        "[]",
        '["name"]',
        "1",
        "null",
        '{"name":1,"ts":0}',
        '{"name":2}',
        '{"name":-1}',
        '{"name":"1"}',
        '{"name":1.0}',
        '{"name":null}',
        '{"name":{"$slice":1}}',
        '{"":1}',
        '{"a..b":1}',
        '{".a":1}',
        '{"a.":1}',
        '{"$where":1}',
        '{"a.$b":1}',
        '{"a":1,"a.b":1}',
        '{"a.b.c":0,"a":0}',
        '{"a.b":1,"a.b.c":1}',
        '{"_id":1,"_id.x":1}',
        '{"_id":2}',
    ],
)
def test_bad_fields(raw: str) -> None:
    err = error_of([("fields", raw)])
    assert isinstance(err, InvalidFields)
    assert err.body() == fields_error(raw)


def test_fields_in_body() -> None:
    assert parse([], {"fields": {"name": 1}}).fields == Projection(True, ("name",))
    assert parse([], {"fields": '{"name":0}'}).fields == Projection(False, ("name",))
    assert error_of([], {"fields": {"a": 1, "b": 0}}).body() == fields_error('{"a":1,"b":0}')
    assert error_of([], {"fields": True}).body() == fields_error("true")


# --- body merging and precedence ------------------------------------------------------------


def test_body_alone_gives_every_parameter() -> None:
    body = {
        "agents": ["a", "b"],
        "open": True,
        "createdAt": {"start": "2021-01-01", "end": None},
        "closedAt": '{"end":"2021-02-01"}',
        "tags": '["t"]',
        "queue": "q",
        "visitorId": "v",
        "direction": "inbound",
        "roomName": "n",
        "offset": 2,
        "count": "3",
        "sort": {"name": 1},
        "fields": {"name": 1},
        "query": {"anything": [1]},
    }
    assert parse([], body) == RoomQuery(
        agents=("a", "b"),
        open=True,
        created=DateRange(JAN1, None),
        closed=DateRange(None, FEB1),
        tags=("t",),
        queue="q",
        visitor_id="v",
        direction="inbound",
        room_name="n",
        offset=2,
        count=3,
        sort=(("name", 1),),
        fields=Projection(True, ("name",)),
    )


def test_body_lists_are_literal_elements() -> None:
    assert parse([], {"agents": ["[x", "y"]}).agents == ("[x", "y")
    assert parse([], {"tags": "single"}).tags == ("single",)
    assert parse([], {"tags": []}).tags == ()
    for bad in ([1], [None], 5, {"a": 1}, True):
        assert error_of([], {"tags": bad}).body() == params_error(
            "'tags' must be an array of strings"
        )


def test_query_string_wins_over_body_per_name() -> None:
    body = {
        "agents": ["body"],
        "tags": ["body"],
        "queue": "body",
        "offset": 9,
        "count": 9,
        "createdAt": {"start": "2020-01-01"},
        "sort": {"name": 1},
        "fields": {"name": 1},
        "direction": "outbound",
    }
    pairs = q(
        "agents[0]=qs&tags[]=qs&queue=qs&offset=1&count=2&createdAt[end]=2021-02-01"
        '&sort={"ts":1}&fields={"ts":0}&direction=inbound'
    )
    assert parse(pairs, body) == RoomQuery(
        agents=("qs",),
        tags=("qs",),
        queue="qs",
        offset=1,
        count=2,
        created=DateRange(None, FEB1),
        sort=(("ts", 1),),
        fields=Projection(False, ("ts",)),
        direction="inbound",
    )


def test_body_fills_the_names_the_query_string_lacks() -> None:
    result = parse(q("queue=qs"), {"queue": "body", "roomName": "body", "agents": ["a"]})
    assert (result.queue, result.room_name, result.agents) == ("qs", "body", ("a",))


def test_overridden_body_values_are_not_validated() -> None:
    body = {"agents": 5, "createdAt": "nope", "sort": "nope", "fields": 1, "count": -1}
    result = parse(q("agents=a&createdAt[start]=2021-01-01&sort={}&fields={}&count=1"), body)
    assert result == RoomQuery(agents=("a",), created=DateRange(JAN1, None), count=1)


def test_empty_query_string_value_still_overrides_the_body() -> None:
    assert parse(q("queue="), {"queue": "body"}).queue is None
    assert parse(q("createdAt="), {"createdAt": {"start": "2021-01-01"}}).created is None


def test_body_errors_name_the_parameter() -> None:
    assert error_of([], {"direction": "sideways"}).body() == params_error(
        "'direction' must be equal to one of the allowed values: inbound, outbound"
    )
    assert error_of([], {"direction": 1}).body() == params_error(
        "'direction' must be equal to one of the allowed values: inbound, outbound"
    )


def test_body_must_be_an_object() -> None:
    err = error_of([], ["a"])  # type: ignore[arg-type]
    assert err.body() == params_error("the request body must be a JSON object")


# --- status codes ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pairs", "cls"),
    [
        (q("foo=1"), InvalidParams),
        (q("open=maybe"), InvalidParams),
        (q("count=-1"), InvalidParams),
        (q("sort=x"), InvalidSort),
        (q("fields=x"), InvalidFields),
        (q("createdAt[start]=x"), InvalidDate),
    ],
)
def test_every_parameter_error_is_a_400(pairs: Pairs, cls: type[ApiError]) -> None:
    err = error_of(pairs)
    assert type(err) is cls
    assert err.status == 400


# --- fuzz -----------------------------------------------------------------------------------

KEYS = st.sampled_from(
    [
        "agents",
        "agents[]",
        "agents[0]",
        "agents[12]",
        "tags",
        "tags[]",
        "open",
        "Open",
        "createdAt",
        "createdAt[start]",
        "createdAt[end]",
        "closedAt",
        "closedAt[start]",
        "closedAt[end]",
        "queue",
        "visitorId",
        "direction",
        "roomName",
        "offset",
        "count",
        "sort",
        "fields",
        "query",
    ]
)
JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
VALUES = st.text(max_size=40) | JSONISH.map(
    lambda v: orjson.dumps(v, option=orjson.OPT_NON_STR_KEYS).decode() if _dumpable(v) else "x"
)


def _dumpable(value: Any) -> bool:
    try:
        orjson.dumps(value)
    except TypeError:
        return False
    return True


@settings(max_examples=400, deadline=None)
@given(pairs=st.lists(st.tuples(KEYS | st.text(max_size=12), VALUES), max_size=6))
def test_fuzz_query_string_parses_or_raises_an_api_error(pairs: Pairs) -> None:
    result = outcome(pairs)
    if isinstance(result, ApiError):
        assert result.status == 400
        body = result.body()
        assert body["success"] is False
        assert isinstance(body["error"], str)
    else:
        assert isinstance(result, RoomQuery)
        hash(result)


@settings(max_examples=300, deadline=None)
@given(body=st.dictionaries(KEYS, JSONISH, max_size=5))
def test_fuzz_body_parses_or_raises_an_api_error(body: dict[str, Any]) -> None:
    result = outcome([], body)
    if isinstance(result, ApiError):
        assert result.status == 400
    else:
        assert isinstance(result, RoomQuery)


# --- the parse cache ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "agents=a&agents[]=b&agents[0]=c&open=true",
        'createdAt={"start":"2024-01-01"}&closedAt[end]=2024-02-01&sort={"ts":1}',
        'fields={"queue":1}&count=500&offset=3&tags=["x","y"]&query=anything',
    ],
)
def test_parse_cache_answers_what_parse_does(raw: str) -> None:
    cache = ParseCache(QueryLimits(max_count=200))
    assert cache.get(raw) is None
    parsed = cache.parse(raw, q(raw))
    assert parsed == Parsed.of(parse(q(raw), None, QueryLimits(max_count=200)))
    assert parsed.ident == repr(parsed.query).encode()
    assert cache.get(raw) is parsed


@pytest.mark.parametrize(
    "raw", ["bogus=1", "open=maybe", "sort={", 'fields={"a":1,"b":0}', "createdAt[start]=x"]
)
def test_parse_cache_raises_the_same_error_every_time(raw: str) -> None:
    cache = ParseCache(QueryLimits())
    expected = error_of(q(raw)).body()
    for _ in range(2):
        with pytest.raises(ApiError) as info:
            cache.parse(raw, q(raw))
        assert info.value.body() == expected
        assert cache.get(raw) is None


def test_parse_cache_is_bounded() -> None:
    cache = ParseCache(QueryLimits(), size=2, longest=20)
    long = "queue=" + "x" * 20
    cache.parse(long, q(long))
    assert cache.get(long) is None  # too long to keep
    for n in range(3):
        cache.parse(f"offset={n}", q(f"offset={n}"))
    assert cache.get("offset=2") is not None
    assert cache.get("offset=0") is None  # forgotten when the cache filled
    off = ParseCache(QueryLimits(), size=0)
    off.parse("offset=1", q("offset=1"))
    assert off.get("offset=1") is None


def test_equal_queries_have_equal_identities() -> None:
    one = Parsed.of(parse(q("agents=a&open=true")))
    other = Parsed.of(parse(q("open=true&agents[]=a")))
    assert one == other
    assert one.ident != Parsed.of(parse(q("agents=a"))).ident
