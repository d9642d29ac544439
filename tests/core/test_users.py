"""Directory: hashed tokens, expiry, personal access tokens, roles, permissions and diffs."""

from __future__ import annotations

import pytest

from service.core import ejson
from service.core.errors import Unauthorized
from service.core.users import Directory, hash_token
from tests.factories import make_user

NOW = 1_700_000_000_000
DAY = 86_400_000


def directory(*docs: dict[str, object]) -> Directory:
    d = Directory(login_expiration_days=90)
    for doc in docs:
        d.upsert_user(ejson.decode(doc))
    return d


def reason(d: Directory, user: str | None, token: str | None) -> str:
    with pytest.raises(Unauthorized) as info:
        d.authenticate(user, token, NOW)
    return info.value.reason


def test_hash_token_is_rocketchats() -> None:
    # base64(sha256("test")), as Accounts._hashLoginToken computes it
    assert hash_token("test") == "n4bQgYhMfWWaL+qgxVrQFaO/TxsrC4Is0V1sFbDwCgg="


def test_valid_expired_inactive_and_pat() -> None:
    d = directory(
        make_user("a", ["admin"], {"fresh": NOW - DAY, "stale": NOW - 91 * DAY}),
        make_user("b", ["bot"], personal=["pat"]),
        make_user("c", ["admin"], {"tok": NOW}, active=False),
    )
    assert d.authenticate("a", "fresh", NOW).id == "a"
    assert d.authenticate("b", "pat", NOW + 10_000 * DAY).roles == {"bot"}
    assert reason(d, "a", "stale") == "expired"
    assert reason(d, "a", "nope") == "bad_token"
    assert reason(d, "x", "fresh") == "unknown_user"
    assert reason(d, "c", "tok") == "inactive"
    assert reason(d, None, "fresh") == "missing_headers"
    assert reason(d, "a", "") == "missing_headers"


def test_expiration_setting() -> None:
    d = Directory(login_expiration_days=1)
    d.upsert_user(ejson.decode(make_user("a", ["admin"], {"t": NOW - 2 * DAY})))
    assert reason(d, "a", "t") == "expired"


def test_permissions_defaults_and_data() -> None:
    d = directory(
        make_user("m", ["livechat-manager"], {"t": NOW}),
        make_user("g", ["livechat-agent"], {"t": NOW}),
    )
    m, g = d.authenticate("m", "t", NOW), d.authenticate("g", "t", NOW)
    assert d.may_list_rooms(m, None)
    assert not d.may_list_rooms(g, None)
    assert d.may_list_rooms(g, ("g",))
    assert not d.may_list_rooms(g, ("g", "h"))
    d.set_permission("view-livechat-rooms", ["livechat-agent"])
    assert d.may_list_rooms(g, None)
    assert not d.may_list_rooms(m, None)
    d.remove_permission("view-livechat-rooms")
    assert d.may_list_rooms(m, None)


def test_diff_adds_a_token_and_unset_removes_it() -> None:
    d = directory(make_user("a", ["admin"], {"t1": NOW}))
    entries = [
        {"hashedToken": hash_token("t1"), "when": ejson.date_from_ms(NOW)},
        {"hashedToken": hash_token("t2"), "when": ejson.date_from_ms(NOW)},
    ]
    d.update_user("a", diff={"services.resume.loginTokens": entries})
    assert d.authenticate("a", "t2", NOW).id == "a"
    d.update_user("a", unset={"services.resume.loginTokens": 1})
    assert reason(d, "a", "t1") == "bad_token"
    d.update_user("a", diff={"active": False, "roles.1": "bot"})
    user = d.user("a")
    assert user is not None
    assert user.roles == {"admin", "bot"}
    assert not user.active


def test_bad_diff_changes_nothing() -> None:
    d = directory(make_user("a", ["admin"], {"t1": NOW}))
    before = list(d.user_docs())
    with pytest.raises(ValueError, match="bad dotted path"):
        d.update_user("a", diff={"username": "new", "a..b": 1})
    assert list(d.user_docs()) == before
