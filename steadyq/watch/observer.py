"""What a view of a running watch hears about: the one interface between the run and
its views (:mod:`steadyq.watch.views`), kept apart so neither imports the other."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from steadyq.watch.run import CheckpointRecord, Watch, WatchResult

__all__ = ["WatchObserver"]


class WatchObserver:
    """What a view of the run hears about; every method is optional."""

    def started(self, watch: Watch) -> None:
        """The run is set up (new or resumed); ``watch.state`` holds what is done."""

    def waiting(self, watch: Watch, next_at: float, now: float) -> None:
        """Sleeping until the next checkpoint; called at every wake-up."""

    def checkpoint(self, watch: Watch, record: CheckpointRecord) -> None:
        """A checkpoint was taken, judged and stored."""

    def alert(
        self, watch: Watch, alert: Mapping[str, Any], deliveries: list[dict[str, Any]]
    ) -> None:
        """An alert was raised (and sent to the configured channels)."""

    def source_failed(self, watch: Watch, error: Exception, retry_in_s: float) -> None:
        """The platform source could not be read; the checkpoint waits and tries again."""

    def finished(self, watch: Watch, result: WatchResult) -> None:
        """The run ended, or was interrupted."""
