"""Where a watch's data comes from: the documented source contract.

Two layers, both public:

* a :class:`~steadyq.watch.sources.store.Reader` is what the measures read, one
  interval at a time, from a telemetry store (``steadyq.watch.sources.store``);
* a :class:`~steadyq.watch.sources.base.PlatformSource` feeds a store from a platform
  before each checkpoint: :class:`~steadyq.watch.sources.cloudrun.CloudRunSource`
  imports a Cloud Run Job's executions, Cloud Logging entries and Cloud Monitoring's
  backlog figures through Google's APIs. ``steadyq import gcloud`` runs the same
  conversion (:mod:`steadyq.watch.sources.gcloud`) over ``gcloud --format=json`` files.

``docs/sources.md`` documents the file formats, the conversion and the contract.
"""

from __future__ import annotations

from steadyq.watch.sources.store import ExecutionRow, Reader, reader_for

__all__ = ["ExecutionRow", "Reader", "reader_for"]
