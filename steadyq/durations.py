"""Durations as people write them: ``90s``, ``10m``, ``4h``, ``7d``, ``1h30m`` or bare seconds."""

from __future__ import annotations

import re
from datetime import UTC, datetime

from steadyq.errors import ConfigError

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")


def parse_duration(text: str | float | int) -> float:
    """Return seconds for ``text``; raise :class:`ConfigError` when it is not a duration."""
    if isinstance(text, bool):
        raise ConfigError(f"not a duration: {text!r}")
    if isinstance(text, int | float):
        if text < 0:
            raise ConfigError(f"a duration cannot be negative: {text!r}")
        return float(text)
    raw = text.strip().lower().replace(" ", "")
    if not raw:
        raise ConfigError("empty duration")
    try:
        value = float(raw)
    except ValueError:
        pass
    else:
        if value < 0:
            raise ConfigError(f"a duration cannot be negative: {text!r}")
        return value
    pos = 0
    total = 0.0
    for match in _PART.finditer(raw):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _UNITS[match.group(2)]
        pos = match.end()
    if pos != len(raw) or pos == 0:
        raise ConfigError(f"not a duration: {text!r} (use e.g. 90s, 10m, 4h, 7d)")
    return total


def format_duration(seconds: float) -> str:
    """A short human form: ``950ms``, ``42s``, ``3m20s``, ``4h``, ``2d3h``."""
    # decide on the rounded value, so 0.9996 s is "1.0s" and 59.7 s is "1m", not "60s"
    if round(seconds * 1000) < 1000:
        return f"{seconds * 1000:.0f}ms"
    if round(seconds, 1) < 10:
        return f"{seconds:.1f}s"
    if round(seconds) < 60:
        return f"{seconds:.0f}s"
    out = []
    rest = round(seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if rest >= size:
            out.append(f"{rest // size}{unit}")
            rest %= size
        if len(out) == 2:
            break
    return "".join(out)


def parse_time_or_age(text: str, *, now: float) -> float:
    """An instant given as an RFC 3339 time or as an age before ``now`` (``24h``)."""
    try:
        return now - parse_duration(text)
    except ConfigError:
        pass
    try:
        stamp = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ConfigError(
            f"not a time or an age: {text!r} (use e.g. 24h or 2026-11-29T10:00:00Z)"
        ) from None
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=UTC)
    return stamp.timestamp()


def rfc3339(epoch: float) -> str:
    """Format epoch seconds as RFC 3339 UTC with microseconds, as Cloud Logging writes."""
    return datetime.fromtimestamp(epoch, UTC).isoformat().replace("+00:00", "Z")
