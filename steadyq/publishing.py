"""Publishing with a record: each message published also lands in the store.

``steadyq publish`` and the demo publish through here, so that a request enters
the ledger as ``pending`` the moment it is queued, and the event history shows
when each message was handed to the queue.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Mapping

from steadyq.brokers.base import Queue
from steadyq.gate import canonical_request_id
from steadyq.telemetry import events as ev
from steadyq.telemetry.events import Event
from steadyq.telemetry.store import EventStore


def publish_recorded(
    queue: Queue,
    store: EventStore,
    items: Iterable[tuple[bytes, Mapping[str, str]]],
    *,
    clock: Callable[[], float] = time.time,
) -> list[str]:
    """Publish ``items`` as one batch, then record a ``message.published`` event each.

    The request id and modalities are read best-effort (a body that the gate will
    reject still gets its event, without an id). The events are written after the
    publish returns: a crash in between loses the ``pending`` mark, never a message.
    """
    batch = [(bytes(body), dict(attrs)) for body, attrs in items]
    ids = queue.publish_batch(batch)
    now = clock()
    events = []
    for message_id, (body, _) in zip(ids, batch, strict=True):
        request_id, modalities = _peek(body)
        events.append(
            Event(
                kind=ev.MESSAGE_PUBLISHED,
                timestamp=now,
                message_id=message_id,
                request_id=request_id,
                data={"request": {"modalities": modalities}} if modalities else {},
            )
        )
    store.write(events)
    return ids


def _peek(body: bytes) -> tuple[str | None, list[str] | None]:
    """The request id and modalities a body claims; never raises, never trusted."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None, None
    if not isinstance(data, dict):
        return None, None
    asked = data.get("modalities", ["video"])  # absent means video, as in the schema
    if not (isinstance(asked, list) and asked and all(isinstance(m, str) for m in asked)):
        asked = None
    return canonical_request_id(data.get("request_id")), (sorted(set(asked)) if asked else None)
