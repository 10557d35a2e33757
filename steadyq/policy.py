"""Retry policy: exponential backoff with full jitter, and the attempt limit."""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """When to try again, and when to give up.

    The delay after failed attempt *n* is drawn uniformly from
    ``[min_backoff_s, min(max_backoff_s, min_backoff_s * 2**n)]``: exponential growth,
    with the whole span jittered so a burst of failures does not come back as a
    burst. The defaults are Pub/Sub's retry-policy bounds (10 s to 600 s).
    After ``max_attempts`` attempts the message is dead-lettered with reason
    ``max_attempts_exceeded``.
    """

    min_backoff_s: float = 10.0
    max_backoff_s: float = 600.0
    max_attempts: int = 5

    def __post_init__(self) -> None:
        if self.min_backoff_s < 0 or self.max_backoff_s < self.min_backoff_s:
            raise ValueError("need 0 <= min_backoff_s <= max_backoff_s")
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")

    def ceiling_s(self, attempt: int) -> float:
        """The largest delay that may follow failed attempt ``attempt`` (1-based)."""
        return min(self.max_backoff_s, self.min_backoff_s * 2.0 ** min(attempt, 64))

    def delay_s(self, attempt: int, rng: random.Random | None = None) -> float:
        """A jittered delay to wait after failed attempt ``attempt``."""
        draw = (rng or random).uniform
        return draw(self.min_backoff_s, self.ceiling_s(attempt))

    def exhausted(self, attempt: int) -> bool:
        """True when attempt number ``attempt`` was the last one allowed."""
        return attempt >= self.max_attempts
