"""Directory: users, hashed login tokens, roles, permissions, and the auth decision."""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from service.core.errors import Unauthorized

__all__ = [
    "DEFAULT_PERMISSIONS",
    "Directory",
    "Grants",
    "Login",
    "User",
    "hash_token",
]

#: Roles holding a permission the permissions data does not mention (Rocket.Chat's defaults).
DEFAULT_PERMISSIONS: Mapping[str, frozenset[str]] = {
    "view-livechat-rooms": frozenset({"livechat-manager", "livechat-monitor", "admin"}),
    "view-l-room": frozenset({"livechat-manager", "livechat-monitor", "livechat-agent", "admin"}),
    "api-bypass-rate-limit": frozenset({"admin", "bot", "app"}),
}

_DAY_MS = 86_400_000
_NEVER = 1 << 62
#: Proven (user, token) pairs remembered at most; only valid tokens get in, so it rarely fills.
LOGIN_CACHE_SIZE = 10_000


def hash_token(token: str) -> str:
    """Rocket.Chat's hashed login token: base64 (standard, padded) of SHA-256 of the raw token."""
    return base64.b64encode(hashlib.sha256(token.encode()).digest()).decode()


def _when_ms(value: Any) -> int | None:
    if isinstance(value, str):
        try:
            dt = datetime.fromisoformat(value)
        except ValueError:
            return None
        return int(dt.timestamp() * 1000)
    if isinstance(value, int | float) and not isinstance(value, bool):
        return int(value)
    return None


@dataclass(frozen=True, slots=True)
class User:
    """What a request needs of a user: identity, roles, state, and token digests with expiry."""

    id: str
    username: str | None
    roles: frozenset[str]
    active: bool
    tokens: tuple[tuple[bytes, int], ...]  # (SHA-256 digest, expires at epoch ms)


@dataclass(frozen=True, slots=True)
class Grants:
    """What a user's roles allow, as far as the rooms endpoint asks."""

    view_all: bool  # view-livechat-rooms
    view_own: bool  # view-l-room
    bypass_rate_limit: bool  # api-bypass-rate-limit

    def may_list_rooms(self, user_id: str, agents: Sequence[str] | None) -> bool:
        """The endpoint's rule: view-livechat-rooms, or view-l-room for one's own calls only."""
        return self.view_all or (
            self.view_own and agents is not None and len(agents) == 1 and agents[0] == user_id
        )


@dataclass(frozen=True, slots=True)
class Login:
    """A user proven by a token, until ``expires`` (epoch ms), with the user's grants."""

    user: User
    expires: int
    grants: Grants


def _prune(doc: Mapping[str, Any]) -> dict[str, Any]:
    """Keep only the fields auth needs; never keep password hashes or other services."""
    out: dict[str, Any] = {"_id": doc["_id"]}
    for key in ("username", "roles", "active"):
        if key in doc:
            out[key] = doc[key]
    services = doc.get("services")
    resume = services.get("resume") if isinstance(services, dict) else None
    tokens = resume.get("loginTokens") if isinstance(resume, dict) else None
    if isinstance(tokens, list):
        kept = []
        for entry in tokens:
            if isinstance(entry, dict):
                kept.append({k: entry[k] for k in ("hashedToken", "when", "type") if k in entry})
            else:
                kept.append(entry)
        out["services"] = {"resume": {"loginTokens": kept}}
    return out


def _segments(path: str) -> list[str]:
    parts = path.split(".")
    if not path or any(p == "" for p in parts):
        raise ValueError(f"bad dotted path {path!r}")
    return parts


def _set_path(doc: dict[str, Any], path: str, value: Any) -> None:
    parts = _segments(path)
    node: Any = doc
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        if isinstance(node, list):
            if not part.isdigit():
                raise ValueError(f"path {path!r} indexes a list with {part!r}")
            idx = int(part)
            if idx > len(node) + 1000:
                raise ValueError(f"path {path!r} index too large")
            while len(node) <= idx:
                node.append(None)
            if last:
                node[idx] = value
            else:
                if not isinstance(node[idx], dict | list):
                    node[idx] = {}
                node = node[idx]
        elif isinstance(node, dict):
            if last:
                node[part] = value
            else:
                if not isinstance(node.get(part), dict | list):
                    node[part] = {}
                node = node[part]
        else:  # pragma: no cover - the loop only descends into dicts and lists
            raise ValueError(f"path {path!r} goes through a scalar")


def _unset_path(doc: dict[str, Any], path: str) -> None:
    parts = _segments(path)
    node: Any = doc
    for part in parts[:-1]:
        if isinstance(node, dict):
            node = node.get(part)
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return
    last = parts[-1]
    if isinstance(node, dict):
        node.pop(last, None)
    elif isinstance(node, list) and last.isdigit() and int(last) < len(node):
        node[int(last)] = None  # MongoDB's $unset on an array element leaves null


class Directory:
    """Users and permissions as the auth middleware needs them.

    Every operation is O(1) in the number of users; token checks are O(tokens of the user).
    Proven logins are remembered until the token expires or anything here changes.
    """

    def __init__(self, login_expiration_days: int = 90) -> None:
        self._expiration_ms = login_expiration_days * _DAY_MS
        self._docs: dict[str, dict[str, Any]] = {}
        self._users: dict[str, User] = {}
        self._permissions: dict[str, frozenset[str]] = {}
        #: (user id, SHA-256 of the token) -> Login; emptied on every change
        self._logins: dict[tuple[str, bytes], Login] = {}
        self.version = 0

    def _changed(self) -> None:
        self.version += 1
        self._logins.clear()

    # -- users -------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._users)

    def _derive(self, doc: dict[str, Any]) -> User:
        tokens: list[tuple[bytes, int]] = []
        services = doc.get("services")
        entries = services.get("resume", {}).get("loginTokens", []) if services else []
        for entry in entries if isinstance(entries, list) else []:
            if not isinstance(entry, dict) or not isinstance(entry.get("hashedToken"), str):
                continue
            try:
                digest = base64.b64decode(entry["hashedToken"], validate=True)
            except ValueError:
                continue
            if entry.get("type") == "personalAccessToken":
                expires = _NEVER
            else:
                when = _when_ms(entry.get("when"))
                if when is None:
                    continue  # no issue date: treat as expired rather than as eternal
                expires = when + self._expiration_ms
            tokens.append((digest, expires))
        roles = doc.get("roles")
        username = doc.get("username")
        return User(
            id=doc["_id"],
            username=username if isinstance(username, str) else None,
            roles=frozenset(r for r in roles if isinstance(r, str))
            if isinstance(roles, list)
            else frozenset(),
            active=doc.get("active") is not False,
            tokens=tuple(tokens),
        )

    def _store(self, doc: dict[str, Any]) -> None:
        pruned = _prune(doc)
        self._docs[pruned["_id"]] = pruned
        self._users[pruned["_id"]] = self._derive(pruned)
        self._changed()

    def upsert_user(self, doc: Mapping[str, Any]) -> None:
        """Insert or replace a whole user document (already Extended-JSON decoded). O(tokens)."""
        if not isinstance(doc.get("_id"), str):
            raise ValueError("user document without a string _id")
        self._store(dict(doc))

    def update_user(
        self,
        user_id: str,
        diff: Mapping[str, Any] | None = None,
        unset: Mapping[str, Any] | None = None,
    ) -> None:
        """Set dotted paths from ``diff`` and remove those in ``unset``. O(size of the user).

        An unknown user is created from what the diff says, so that later events can complete
        it. All paths are checked before any is applied, so a bad diff changes nothing.
        """
        current = self._docs.get(user_id)
        doc: dict[str, Any] = (
            {"_id": user_id} if current is None else _deep_copy(current)  # never half-applied
        )
        for path, value in (diff or {}).items():
            _set_path(doc, path, value)
        for path in unset or {}:
            _unset_path(doc, path)
        doc["_id"] = user_id
        self._store(doc)

    def remove_user(self, user_id: str) -> bool:
        """Forget a user; False when unknown. O(1)."""
        if self._docs.pop(user_id, None) is None:
            return False
        del self._users[user_id]
        self._changed()
        return True

    def user(self, user_id: str) -> User | None:
        """The user with this _id, or None. O(1)."""
        return self._users.get(user_id)

    def user_docs(self) -> Iterator[dict[str, Any]]:
        """The kept user documents (for checkpoints). O(users)."""
        return iter(list(self._docs.values()))

    # -- permissions -------------------------------------------------------------------------

    def set_permission(self, permission: str, roles: Sequence[Any]) -> None:
        """Replace the roles holding ``permission``. O(roles)."""
        self._permissions[permission] = frozenset(r for r in roles if isinstance(r, str))
        self._changed()

    def remove_permission(self, permission: str) -> None:
        """Forget a permission document; the built-in default applies again. O(1)."""
        if self._permissions.pop(permission, None) is not None:
            self._changed()

    def permission_roles(self, permission: str) -> frozenset[str]:
        """Roles holding ``permission``: from the data, else Rocket.Chat's default. O(1)."""
        roles = self._permissions.get(permission)
        if roles is None:
            return DEFAULT_PERMISSIONS.get(permission, frozenset())
        return roles

    def permission_docs(self) -> Iterator[dict[str, Any]]:
        """The permission documents (for checkpoints). O(permissions)."""
        return iter([{"_id": p, "roles": sorted(r)} for p, r in self._permissions.items()])

    def has_permission(self, user: User, permission: str) -> bool:
        """Whether one of the user's roles holds ``permission``. O(roles)."""
        return not user.roles.isdisjoint(self.permission_roles(permission))

    def grants(self, user: User) -> Grants:
        """What the user's roles allow. O(roles)."""
        return Grants(
            view_all=self.has_permission(user, "view-livechat-rooms"),
            view_own=self.has_permission(user, "view-l-room"),
            bypass_rate_limit=self.has_permission(user, "api-bypass-rate-limit"),
        )

    # -- decisions ---------------------------------------------------------------------------

    def login(self, user_id: str | None, token: str | None, now_ms: int) -> Login:
        """The login these headers prove, or Unauthorized with a bounded ``reason``.

        O(1) for a pair proven before (the cache is keyed by the token's digest, so a lookup
        tells nothing about tokens one does not hold), else O(tokens of the user): every stored
        digest of the user is compared in constant time, without stopping early.
        """
        if not user_id or not token:
            raise Unauthorized("missing_headers")
        digest = hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()
        key = (user_id, digest)
        login = self._logins.get(key)
        if login is not None and login.expires > now_ms:
            return login
        user = self._users.get(user_id)
        if user is None:
            raise Unauthorized("unknown_user")
        matched = False
        expires = -1
        for stored, until in user.tokens:
            if hmac.compare_digest(stored, digest):
                matched = True
                expires = max(expires, until)
        if not matched:
            raise Unauthorized("bad_token")
        if expires <= now_ms:
            raise Unauthorized("expired")
        if not user.active:
            raise Unauthorized("inactive")
        login = Login(user, expires, self.grants(user))
        if len(self._logins) >= LOGIN_CACHE_SIZE:
            self._logins.clear()
        self._logins[key] = login
        return login

    def authenticate(self, user_id: str | None, token: str | None, now_ms: int) -> User:
        """The user these headers prove (see ``login``)."""
        return self.login(user_id, token, now_ms).user

    def may_list_rooms(self, user: User, agents: Sequence[str] | None) -> bool:
        """The endpoint's rule: view-livechat-rooms, or view-l-room for one's own calls only."""
        return self.grants(user).may_list_rooms(user.id, agents)


def _deep_copy(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _deep_copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_deep_copy(v) for v in value]
    return value
