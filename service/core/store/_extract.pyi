"""Types of the compiled extraction kernel (_extract.pyx)."""

from collections.abc import Callable
from typing import Any

def extract_run(
    data: bytes,
    first_line: int,
    chunk: Any,
    sort_get: list[tuple[str, str | None]],
    eq_get: list[tuple[str, str | None]],
    slow: Callable[[Any, bytes, int], None],
    other: Callable[[Any], Any],
    line_error: Callable[[int, str], Exception],
) -> None: ...
