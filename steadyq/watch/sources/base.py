"""The contract of a platform source: what feeds a watch's store before each checkpoint.

A live watch with a platform source calls, at every checkpoint ``at``:

1. :meth:`PlatformSource.sync` ``(until=at, earliest=...)``: bring into the store every
   execution and log entry with a time before ``until`` not imported yet (the first
   call goes back to ``earliest``, the start of the baseline or of the window). It
   must be idempotent: a sync that failed half-way is simply called again.
2. the measures then read the store, as for any watch;
3. :meth:`PlatformSource.queue_sample` ``(at)``: the queue measures at ``at``, or
   None when the platform has no figures.

A sync that fails for a reason that may pass (the API unavailable, a quota, a
timeout) raises :class:`SourceUnavailable`: the watch backs off, tries again, and
takes the checkpoint late rather than judge it on part of its data. Anything else
(no credentials, a permission refused, a job that does not exist) raises
:class:`~steadyq.errors.ConfigError` or :class:`~steadyq.errors.BackendError` and
stops the watch (exit 3; start it again to resume).
"""

from __future__ import annotations

import abc
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from steadyq.errors import BackendUnavailable

__all__ = ["PlatformSource", "SourceUnavailable", "SyncReport"]


class SourceUnavailable(BackendUnavailable):
    """The platform could not be read for now; the same sync may succeed later."""


@dataclass
class SyncReport:
    """What one sync brought in."""

    until: float
    executions: int = 0
    entries: int = 0
    duplicates: int = 0
    details: dict[str, Any] = field(default_factory=dict)


class PlatformSource(abc.ABC):
    """A platform whose executions and logs a watch judges (see the module docs).

    ``settle_s`` is how long after a checkpoint's instant the watch waits before the
    sync, so that entries the platform ingests late are in.
    """

    settle_s: float = 60.0

    @property
    @abc.abstractmethod
    def url(self) -> str:
        """The source's URL, as the user gave it (``cloudrun://PROJECT/REGION/JOB``)."""

    @abc.abstractmethod
    def sync(self, until: float, *, earliest: float) -> SyncReport:
        """Import what happened before ``until`` and is not in the store yet.

        Raises:
            SourceUnavailable: try again later; nothing is half-counted.
            ConfigError: the source cannot work as configured (credentials, names).
            BackendError: the platform refused for good, or the store failed.
        """

    def queue_sample(self, at: float) -> Mapping[str, float | int | None] | None:
        """The queue measures at ``at`` (``queue.ready``, ``queue.oldest_unacked_age_s``
        …); None when this source has none.

        Raises:
            SourceUnavailable: try again later.
        """
        return None

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release clients. Idempotent."""
