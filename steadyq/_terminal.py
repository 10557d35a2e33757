"""Showing untrusted text on a terminal."""

from __future__ import annotations

from rich.text import Text


def safe(value: object, limit: int | None = 200) -> Text:
    """Text for a terminal: control characters escaped, markup inert, long values cut."""
    text = "" if value is None else str(value)
    cleaned = "".join(
        ch if ch.isprintable() or ch == " " else ch.encode("unicode_escape").decode("ascii")
        for ch in text
    )
    if limit is not None and len(cleaned) > limit:
        cleaned = cleaned[: limit - 1] + "…"
    return Text(cleaned)
