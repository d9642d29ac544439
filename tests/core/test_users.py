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


# -- the login cache ---------------------------------------------------------------------------


def test_login_is_remembered_until_the_directory_changes() -> None:
    d = directory(make_user("m", ["livechat-manager"], {"t": NOW}))
    first = d.login("m", "t", NOW)
    assert d.login("m", "t", NOW + 1000) is first
    assert first.grants.view_all
    assert first.grants.may_list_rooms("m", None)
    d.set_permission("view-livechat-rooms", ["admin"])  # permissions changed
    again = d.login("m", "t", NOW)
    assert again is not first
    assert not again.grants.view_all
    d.upsert_user(ejson.decode(make_user("m", ["admin"], {"t": NOW})))  # roles changed
    assert d.login("m", "t", NOW).grants.view_all
    d.update_user("m", diff={"active": False})
    assert reason(d, "m", "t") == "inactive"
    d.update_user("m", diff={"active": True})
    assert d.login("m", "t", NOW).user.active
    d.remove_user("m")
    assert reason(d, "m", "t") == "unknown_user"


def test_remembered_login_still_expires() -> None:
    d = Directory(login_expiration_days=1)
    d.upsert_user(ejson.decode(make_user("a", ["admin"], {"t": NOW - DAY + 1000})))
    assert d.login("a", "t", NOW).expires == NOW + 1000
    assert d.authenticate("a", "t", NOW + 999).id == "a"
    with pytest.raises(Unauthorized) as info:
        d.authenticate("a", "t", NOW + 1000)
    assert info.value.reason == "expired"


def test_login_takes_the_latest_expiry_of_equal_tokens() -> None:
    d = Directory(login_expiration_days=1)
    doc = make_user("a", ["admin"], {"t": NOW - DAY})  # expired...
    doc["services"]["resume"]["loginTokens"].append(
        {"hashedToken": hash_token("t"), "when": {"$date": ejson.date_from_ms(NOW)}}
    )  # ...and the same token issued again today
    d.upsert_user(ejson.decode(doc))
    assert d.login("a", "t", NOW).expires == NOW + DAY


def test_failed_logins_are_not_remembered() -> None:
    d = directory(make_user("a", ["admin"], {"t": NOW}))
    assert reason(d, "a", "wrong") == "bad_token"
    assert reason(d, "a", "wrong") == "bad_token"
    assert reason(d, "b", "t") == "unknown_user"
    d.upsert_user(ejson.decode(make_user("b", ["admin"], {"t": NOW})))
    assert d.authenticate("b", "t", NOW).id == "b"
