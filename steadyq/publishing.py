"""Publishing with a record: each message published also lands in the store.

``steadyq publish`` and the demo publish through here, so that a request enters
the ledger as ``pending`` the moment it is queued, and the event history shows
when each message was handed to the queue.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping

from steadyq.brokers.base import Queue
from steadyq.gate import request_id_of
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

    The request id is read best-effort (a body that the gate will reject still gets
    its event, without an id). Nothing else of the body is: publishing knows no
    request model, so a request's ledger fields appear once a worker accepts it.
    The events are written after the publish returns: a crash in between loses the
    ``pending`` mark, never a message.
    """
    batch = [(bytes(body), dict(attrs)) for body, attrs in items]
    ids = queue.publish_batch(batch)
    now = clock()
    events = [
        Event(
            kind=ev.MESSAGE_PUBLISHED,
            timestamp=now,
            message_id=message_id,
            request_id=request_id_of(body),
        )
        for message_id, (body, _) in zip(ids, batch, strict=True)
    ]
    store.write(events)
    return ids
