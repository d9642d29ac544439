"""The live call board's files: served from memory with their content types and a strict
Content-Security-Policy, HEAD and revalidation like every GET route, nothing else reachable."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from typing import Any
from urllib.parse import urlsplit

import pytest
from aiohttp.test_utils import TestClient

from service.web import board

Client = TestClient[Any, Any]

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
TYPES = {
    "/board": "text/html; charset=utf-8",
    "/board/": "text/html; charset=utf-8",
    "/board/index.html": "text/html; charset=utf-8",
    "/board/board.js": "text/javascript; charset=utf-8",
    "/board/board.css": "text/css; charset=utf-8",
    "/board/icon.svg": "image/svg+xml",
}


class _Page(HTMLParser):
    """What the page loads and whether anything is inline."""

    def __init__(self) -> None:
        super().__init__()
        self.loads: list[str] = []
        self.inline: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        named = dict(attrs)
        for key in ("src", "href"):
            if named.get(key):
                self.loads.append(str(named[key]))
        if tag == "style" or "style" in named:
            self.inline.append(f"<{tag}> style")
        self.inline += [f"<{tag} {k}>" for k in named if k.startswith("on")]
        if tag == "script":
            self._in_script = True
            if not named.get("src"):
                self.inline.append("<script> without src")

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self._in_script = False

    def handle_data(self, data: str) -> None:
        if self._in_script and data.strip():
            self.inline.append("<script> body")


@pytest.mark.parametrize("path", sorted(TYPES))
async def test_each_file_has_its_type_and_the_security_headers(client: Client, path: str) -> None:
    resp = await client.get(path)
    assert resp.status == 200
    assert resp.headers["Content-Type"] == TYPES[path]
    assert resp.headers["Content-Security-Policy"] == CSP
    assert resp.headers["X-Content-Type-Options"] == "nosniff"
    assert resp.headers["Referrer-Policy"] == "no-referrer"
    assert resp.headers["Cache-Control"] == "no-cache"
    assert (
        await resp.read()
        == board.FILES[path.removeprefix("/board").strip("/") or "index.html"].body
    )


@pytest.mark.parametrize("path", sorted(TYPES))
async def test_head_and_revalidation(client: Client, path: str) -> None:
    got = await client.get(path)
    body = await got.read()
    head = await client.head(path)
    assert head.status == 200
    assert await head.read() == b""
    assert int(head.headers["Content-Length"]) == len(body)
    same = {k: v for k, v in head.headers.items() if k != "Date"}
    assert same == {k: v for k, v in got.headers.items() if k != "Date"}
    again = await client.get(path, headers={"If-None-Match": got.headers["ETag"]})
    assert again.status == 304
    assert await again.read() == b""
    assert again.headers["Content-Security-Policy"] == CSP


@pytest.mark.parametrize(
    "path",
    [
        "/board/nope.js",
        "/board/__init__.py",
        "/board/index.htm",
        "/board/%2e%2e/app.py",
        "/board/..%2fapp.py",
        "/board/..%2F..%2Fsettings.py",
        "/board/%2fetc%2fpasswd",
        "/board/board.js/x",
        "/boards",
    ],
)
async def test_nothing_else_is_reachable(client: Client, path: str) -> None:
    resp = await client.get(path)
    assert resp.status == 404
    assert await resp.json() == {"success": False, "error": "Not found"}
    assert "Content-Security-Policy" not in resp.headers


async def test_the_page_is_counted_under_its_route(client: Client) -> None:
    await client.get("/board")
    await client.get("/board/board.js")
    await client.get("/board/nope.js")
    text = await (await client.get("/metrics")).text()
    assert 'method="GET",route="/board",status="200"' in text
    assert 'method="GET",route="/board/{name}",status="200"' in text
    assert 'method="GET",route="/board/{name}",status="404"' in text


def test_the_page_loads_only_its_own_files_and_has_nothing_inline() -> None:
    page = _Page()
    page.feed(board.FILES["index.html"].body.decode())
    assert page.inline == []
    assert sorted(page.loads) == ["/board/board.css", "/board/board.js", "/board/icon.svg"]
    for url in page.loads:
        assert not urlsplit(url).scheme
        assert not urlsplit(url).netloc
        assert url.removeprefix("/board/") in board.FILES


def test_the_script_never_writes_markup() -> None:
    script = board.FILES["board.js"].body.decode()
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
        assert sink not in script
    assert not re.search(r"new\s+Function", script)
    assert "localStorage" not in script  # the login lives in sessionStorage only
    css = board.FILES["board.css"].body.decode()
    assert not re.search(r"@import|url\(\s*['\"]?(https?:)?//", css)  # nothing from elsewhere
