"""Rocket.Chat's per-user, per-route rate limit: a fixed window of N requests per T ms."""

from __future__ import annotations

__all__ = ["RateLimiter"]


class RateLimiter:
    """Fixed windows keyed by (user, route). ``check`` is O(1); ``sweep`` drops old windows."""

    def __init__(self, requests: int, window_ms: int, max_keys: int = 1_000_000) -> None:
        self.requests = requests
        self.window_ms = window_ms
        self.max_keys = max_keys
        self._windows: dict[tuple[str, str], list[int]] = {}  # key -> [window start, used]

    def check(self, user_id: str, route: str, now_ms: int) -> tuple[bool, int, int]:
        """Count one request; return (allowed, remaining, reset epoch ms)."""
        key = (user_id, route)
        window = self._windows.get(key)
        if window is None or now_ms >= window[0] + self.window_ms:
            if window is None and len(self._windows) >= self.max_keys:
                self.sweep(now_ms)
            window = self._windows[key] = [now_ms, 0]
        reset = window[0] + self.window_ms
        if window[1] >= self.requests:
            return False, 0, reset
        window[1] += 1
        return True, self.requests - window[1], reset

    def sweep(self, now_ms: int) -> None:
        """Forget windows that have ended. O(keys)."""
        self._windows = {k: w for k, w in self._windows.items() if now_ms < w[0] + self.window_ms}
