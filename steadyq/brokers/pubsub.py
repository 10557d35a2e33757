"""Google Cloud Pub/Sub as a steadyq queue: ``pubsub://PROJECT/NAME``.

NAME is asked of the API: a subscription (pull, settle, DLQ) whose topic is read from
it, or a topic (publish only; DLQ operations still work). Query parameters
``dlq_topic`` and ``dlq_subscription`` override the dead-letter names, which default
to the subscription's dead-letter policy topic (else ``TOPIC-dlq``) and
``DLQ_TOPIC-sub`` — what ``steadyq pubsub setup`` creates.

What steadyq adds to Pub/Sub, and how:

* **Terminal dead-letter.** Pub/Sub cannot send one message to its dead-letter topic.
  Here a dead-letter publishes the message to the dead-letter topic with
  ``steadyq_reason``, ``steadyq_detail``, ``steadyq_attempts`` and
  ``steadyq_source_subscription`` attributes, waits until the publish is confirmed,
  and only then acks the original. A failure in between leaves the original
  unacked (it comes back), at worst with a second copy in the DLQ, which the DLQ
  operations treat as one letter.
* **Durable attempts.** Each pull raises steadyq's own count for
  ``subscription/message_id`` in the telemetry store (the queue needs one:
  :func:`steadyq.brokers.store_for` hands it over). ``delivery_attempt`` from Pub/Sub,
  present when a dead-letter policy is set, is taken when it is higher; a delivery it
  calls the first (1) is not counted at all, since its redelivery, were its worker to
  die, is counted (Pub/Sub says 2); a nack that notes an error or a run starts it.
* **Leases.** A pull sets each message's ack deadline to the lease asked for (Pub/Sub
  allows 0 to 600 s); a nack with a delay sets it to the delay. The worker extends
  leases only up to its handler's hard deadline.
* **Lost leases.** Pub/Sub accepts a stale ack id silently (without exactly-once
  delivery). A delivery carries the count it was pulled with (0 when uncounted); when
  the store's count is higher, someone pulled the message since, and settling it is
  reported as lost (an uncounted delivery well inside its lease needs no look). On
  a subscription with exactly-once delivery Pub/Sub refuses such an ack id itself
  (ErrorInfo ``EXACTLY_ONCE_ACKID_FAILURE``): that is a lost lease too, never an ack
  believed done.
* **DLQ reads** lease what they read for 10 s (Pub/Sub's shortest) and give it all back
  as soon as the scan ends, so a DLQ command blocks no other reader for long.

The driver (``google-cloud-pubsub``, the ``pubsub`` extra) is imported on first use.
Every driver error becomes a :class:`~steadyq.errors.BackendError`; an unreachable
server or a missing topic or subscription becomes
:class:`~steadyq.errors.BackendUnavailable`, so the worker backs off and resumes.
"""

from __future__ import annotations

import contextlib
import math
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import parse_qs, urlsplit

from steadyq.brokers.base import (
    Attributes,
    DeadLetter,
    Delivery,
    DlqFilter,
    Queue,
    QueueStats,
    Settlement,
    SettleResult,
    check_publish_args,
    check_pull_args,
)
from steadyq.errors import (
    BackendError,
    BackendUnavailable,
    ConfigError,
    LeaseLost,
    NotFound,
)
from steadyq.telemetry.attempts import AttemptCounter
from steadyq.telemetry.events import Event
from steadyq.telemetry.store import EventStore

# Attributes steadyq writes; user attributes never start with this prefix.
PREFIX = "steadyq_"
A_MESSAGE_ID = "steadyq_message_id"
A_REQUEST_ID = "steadyq_request_id"
A_REASON = "steadyq_reason"
A_DETAIL = "steadyq_detail"
A_ATTEMPTS = "steadyq_attempts"
A_SOURCE = "steadyq_source_subscription"
A_PUBLISHED_AT = "steadyq_published_at"
A_DEAD_LETTERED_AT = "steadyq_dead_lettered_at"
A_REPLAYS = "steadyq_replays"
# Attributes Pub/Sub's own dead-letter policy adds when it forwards a message.
PUBSUB_DLQ_PREFIX = "CloudPubSubDeadLetter"
PUBSUB_DLQ_COUNT = "CloudPubSubDeadLetterSourceDeliveryCount"
PUBSUB_DLQ_SOURCE = "CloudPubSubDeadLetterSourceSubscription"
# reason of a letter forwarded by Pub/Sub's dead-letter policy, not by steadyq
DELIVERY_ATTEMPTS_EXHAUSTED = "delivery_attempts_exhausted"

MAX_PULL = 100  # the emulator returns at most 100 per pull; real Pub/Sub 1,000
MAX_ACK_DEADLINE_S = 600
MAX_IDS_PER_CALL = 500  # ack ids per acknowledge / modify_ack_deadline request
MAX_PUBLISH = 1000  # messages per publish request
MAX_PUBLISH_BYTES = 8 * 1024 * 1024  # under the 10 MB request limit
DETAIL_MAX = 1024  # attribute values may be 1,024 bytes
# a DLQ command that only reads (ls, show, stats, export) holds what it has read for the
# shortest ack deadline Pub/Sub allows, renewed while the scan runs, and gives it all back
# (ack deadline 0) as soon as it has read to the end; replay and purge hold letters
# longer, since they publish or ack them before giving the rest back
DLQ_READ_LEASE_S = 10
DLQ_WRITE_LEASE_S = 60
# what ``steadyq pubsub setup`` asks for unless told otherwise: the ack deadline is
# the worker's default lease (a 600 s --deadline plus slack, capped at Pub/Sub's 600 s),
# so a pull needs no extra call to set it; the dead-letter subscription gets the
# shortest deadline, so a DLQ reader that dies blocks nobody for long
DEFAULT_ACK_DEADLINE_S = 600
DLQ_ACK_DEADLINE_S = 10
DEFAULT_RETENTION_S = 7 * 86400  # Pub/Sub's default and longest for a subscription
MIN_RETENTION_S = 600
# with exactly-once delivery, an ack or modack whose ack id the server refuses fails
# with this reason, and the refused ids (with PERMANENT_… or TRANSIENT_… values) in the
# ErrorInfo metadata; the others in the request were applied
EXACTLY_ONCE_REASON = "EXACTLY_ONCE_ACKID_FAILURE"
TRANSIENT_TRIES = 3
FORGET_BATCH = 2000
RPC_TIMEOUT_S = 30.0
PULL_WAIT_S = 2.0
# a read-ahead batch older than this goes back instead of being delivered: it must be
# claimed well inside the subscription's ack deadline (10 s at the least)
READ_AHEAD_FRESH_S = 2.0
# pulls kept in flight ahead of the worker at most: one while a pull comes back before
# the worker has settled into the batch before it, more when the worker had to wait
# for it (a network between the worker and Pub/Sub: the round trip is then longer than
# the worker's work on a batch, and one pull in flight leaves the worker idle), as long
# as the worker's pace takes all of them within a quarter of READ_AHEAD_FRESH_S
MAX_READ_AHEAD = 3
# attempt counts untouched this long are dropped when a queue object first pulls: no
# message outlives it in Pub/Sub (31 days is the longest a topic retains messages)
ATTEMPTS_KEPT_S = 31 * 86400
# a first delivery told by Pub/Sub whose lease runs at least this much longer is settled
# without looking at the store for a newer count (see PubSubQueue._split): more than
# the lag between Pub/Sub starting the ack deadline and the queue noting the lease
# (a read-ahead batch is up to READ_AHEAD_FRESH_S old when it is delivered)
LEASE_CHECK_MARGIN_S = READ_AHEAD_FRESH_S + 3.0

EMULATOR_NOTE = (
    "the Pub/Sub emulator keeps no backlog figures (no Cloud Monitoring): ready, in flight,"
    " delayed, dead-lettered and oldest unacked age are unknown here"
)


def emulator_host() -> str | None:
    return os.environ.get("PUBSUB_EMULATOR_HOST") or None


def dlq_names(topic_id: str, dlq_topic_id: str | None = None) -> tuple[str, str]:
    """The dead-letter topic and subscription ids that go with a topic id."""
    dlq_topic = dlq_topic_id or f"{topic_id}-dlq"
    return dlq_topic, f"{dlq_topic}-sub"


def clients() -> tuple[Any, Any]:
    """Low-level (GAPIC) publisher and subscriber clients, for the emulator when
    ``PUBSUB_EMULATOR_HOST`` is set, else for Google Cloud with default credentials.

    Raises:
        ConfigError: google-cloud-pubsub is not installed.
        BackendUnavailable: no credentials were found.
    """
    try:
        from google.pubsub_v1 import PublisherClient, SubscriberClient
    except ImportError:
        raise ConfigError(
            "pubsub:// needs google-cloud-pubsub: pip install 'steadyq[pubsub]'"
        ) from None
    kwargs: dict[str, Any] = {}
    host = emulator_host()
    if host:
        from google.auth.credentials import AnonymousCredentials

        anonymous = AnonymousCredentials()  # type: ignore[no-untyped-call]
        kwargs = {"client_options": {"api_endpoint": host}, "credentials": anonymous}
    with mapped("connect"):
        return PublisherClient(**kwargs), SubscriberClient(**kwargs)


@contextlib.contextmanager
def mapped(what: str, *, missing_is_outage: bool = True) -> Iterator[None]:
    """Turn google-api-core, google-auth and gRPC errors into steadyq's."""
    try:
        yield
    except BackendError:
        raise
    except Exception as exc:
        raise translate(exc, what, missing_is_outage=missing_is_outage) from exc


def translate(exc: BaseException, what: str, *, missing_is_outage: bool = True) -> Exception:
    from google.api_core import exceptions as gexc
    from google.auth import exceptions as auth_exc

    text = getattr(exc, "message", None) or str(exc) or type(exc).__name__
    text = f"Pub/Sub {what}: {text}"
    if isinstance(exc, gexc.NotFound):
        if missing_is_outage:
            return BackendUnavailable(f"{text} (create it with `steadyq pubsub setup`)")
        return NotFound(text)
    if isinstance(
        exc,
        gexc.ServiceUnavailable
        | gexc.DeadlineExceeded
        | gexc.RetryError
        | gexc.Unauthenticated
        | gexc.PermissionDenied
        | auth_exc.GoogleAuthError,
    ):
        return BackendUnavailable(text)
    if isinstance(exc, gexc.InvalidArgument):
        return ConfigError(text)  # a malformed name, an out-of-range setting
    if isinstance(exc, gexc.GoogleAPIError):
        return BackendError(text)
    if isinstance(exc, ValueError | TypeError):
        return BackendError(text)
    raise exc


def ack_id_failures(exc: BaseException) -> dict[str, str] | None:
    """The ack ids an exactly-once subscription refused in a failed acknowledge or
    modify_ack_deadline, with why (``PERMANENT_FAILURE_INVALID_ACK_ID``,
    ``TRANSIENT_FAILURE_…``), from the error's ErrorInfo; empty when the error says the
    ack ids were refused without naming them; None for any other error."""
    from google.api_core import exceptions as gexc

    # what Google's streaming client raises from an ack future: no ack id named
    from google.cloud.pubsub_v1.subscriber.exceptions import AcknowledgeError

    if isinstance(exc, AcknowledgeError):
        return {}
    if not isinstance(exc, gexc.GoogleAPICallError):
        return None
    metadata = exc.metadata or {}
    failures = {
        str(k): str(v)
        for k, v in metadata.items()
        if str(v).startswith(("PERMANENT_", "TRANSIENT_"))
    }
    if not failures and exc.reason != EXACTLY_ONCE_REASON:
        return None
    return failures


class _Given(Exception):
    """The URL named the topic: no lookup needed."""


@dataclass(frozen=True, slots=True)
class _Names:
    project: str
    topic: str  # full path
    subscription: str | None  # full path; None when the URL names a topic
    dlq_topic: str
    dlq_subscription: str
    ack_deadline_s: int


@dataclass(slots=True)
class _Letter:
    letter: DeadLetter
    ack_ids: list[str]


class PubSubTransport:
    """The RPCs of a queue's data path, and the lease state between a pull and its
    settlement.

    It publishes in requests Pub/Sub accepts, pulls without waiting, and acknowledges
    and modifies ack deadlines in chunks, an exactly-once subscription's refusals told
    per ack id (never an ack believed done). Between a pull and its settlement it holds
    the leases being set in the background, the ack ids whose lease the server refused,
    and the pull started ahead of time. It knows nothing of attempt counts or letters:
    the queue decides what to settle, the transport carries it out.

    Thread-safe: the queue settles on more than one thread while it pulls on another.
    ``_lease_lock`` guards the leases on their way and the refused ack ids; whoever waits
    for the leases holds it, so no ack, nack or extension overtakes a lease."""

    def __init__(
        self,
        api: Callable[[], tuple[Any, Any]],
        subscription: Callable[[], str],
        *,
        pull_concurrency: int = 4,
    ) -> None:
        self._api = api  # (publisher, subscriber), made by the queue on first use
        self._subscription = subscription  # the queue's, resolved on first use
        self.pull_concurrency = max(1, pull_concurrency)
        self._pool_lock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None
        self._leasing: list[Future[None]] = []  # leases being set after pulls
        self._lease_lock = threading.Lock()
        # ack ids whose lease the server refused to set (exactly-once subscriptions)
        self._refused: set[str] = set()
        # pulls started ahead of time, oldest first: (when, how many, the RPC)
        self._ahead: deque[tuple[float, int, Future[list[Any]]]] = deque()
        self.ahead_depth = 1  # how many read_ahead keeps in flight (_tune_ahead)
        self._taken: deque[tuple[float, int]] = deque(maxlen=8)  # (when, how many) pulled

    def executor(self) -> ThreadPoolExecutor:
        with self._pool_lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(
                    max_workers=self.pull_concurrency, thread_name_prefix="steadyq-pubsub"
                )
            return self._pool

    # -- publish ----------------------------------------------------------------

    def publish(self, topic: str, items: Sequence[tuple[bytes, dict[str, str]]]) -> list[str]:
        """Publish in requests of at most MAX_PUBLISH messages; return once confirmed.

        Requests are built on the raw protobuf: a proto-plus message costs about 17 µs
        to build, the raw one 3.5 µs, which is most of a dead-letter batch's CPU."""
        if not items:
            return []
        from google.pubsub_v1 import PubsubMessage
        from google.pubsub_v1.types import PublishRequest

        message = PubsubMessage.pb()
        publisher, _ = self._api()
        ids: list[str] = []
        chunk: list[Any] = []
        size = 0

        def flush() -> None:
            with mapped(f"publish to {topic.rsplit('/', 1)[-1]}"):
                response = publisher.publish(
                    request=_raw(PublishRequest, topic=topic, messages=chunk),
                    retry=None,
                    timeout=RPC_TIMEOUT_S,
                )
            ids.extend(response.message_ids)
            chunk.clear()

        for body, attrs in items:
            cost = len(body) + sum(len(k) + len(v) for k, v in attrs.items()) + 64
            if chunk and (len(chunk) >= MAX_PUBLISH or size + cost > MAX_PUBLISH_BYTES):
                flush()
                size = 0
            chunk.append(message(data=body, attributes=attrs))
            size += cost
        flush()
        return ids

    # -- pull -------------------------------------------------------------------

    def pull(self, max_messages: int) -> list[Any]:
        """Up to ``max_messages`` raw ReceivedMessages: the read-ahead batches first
        (what they leased is leased to no fresh pull), then pulls (several in flight
        when more than one is wanted) until the subscription has no more ready."""
        subscription = self._subscription()

        def one(count: int) -> list[Any]:
            return self.pull_once(subscription, count)

        received: list[Any] = []
        exhausted = False
        while self._ahead and len(received) < max_messages:
            ahead = self._take_ahead(max_messages - len(received))
            if ahead is not None:
                batch, more = ahead
                received.extend(batch)
                exhausted = exhausted or not more
        if exhausted:
            max_messages = len(received)  # the subscription had no more just then
        while len(received) < max_messages:
            left = max_messages - len(received)
            sizes = [min(MAX_PULL, left - i) for i in range(0, left, MAX_PULL)]
            sizes = sizes[: self.pull_concurrency]
            # several pulls in flight at once when more than one batch is wanted
            pool = self.executor() if len(sizes) > 1 else None
            batches = [one(sizes[0])] if pool is None else list(pool.map(one, sizes))
            got = sum(len(b) for b in batches)
            for batch in batches:
                received.extend(batch)
            if got < sum(sizes):
                break  # the subscription had no more ready for now
        self._taken.append((time.monotonic(), len(received)))  # the worker's pace
        return received

    def pull_once(self, subscription: str, count: int) -> list[Any]:
        """One synchronous pull that does not wait for messages to arrive.

        ``return_immediately`` is deprecated by Google (it favours long polling), but
        without it both the emulator and Pub/Sub hold an empty pull open for a while,
        and the contract's pull must not block. A pull that still times out found
        nothing ready.
        """
        from google.api_core import exceptions as gexc
        from google.pubsub_v1.types import PullRequest

        _, subscriber = self._api()
        request = _raw(
            PullRequest, subscription=subscription, max_messages=count, return_immediately=True
        )
        try:
            with mapped("pull"):
                response = subscriber.pull(request=request, retry=None, timeout=PULL_WAIT_S)
        except BackendUnavailable as exc:
            if isinstance(exc.__cause__, gexc.DeadlineExceeded):
                return []
            raise
        # the raw protobuf: proto-plus wrappers cost more than the RPC at this rate
        return list(type(response).pb(response).received_messages)

    def read_ahead(self, max_messages: int) -> None:
        """Start pulls of up to ``max_messages`` each in the background until
        ``ahead_depth`` are in flight; the next :meth:`pull` delivers them."""
        if max_messages < 1 or len(self._ahead) >= self.ahead_depth:
            return
        count = min(MAX_PULL, max_messages)
        subscription = self._subscription()
        while len(self._ahead) < self.ahead_depth:
            started = time.monotonic()  # the lease clock runs from the request
            fetching = self.executor().submit(self.pull_once, subscription, count)
            self._ahead.append((started, count, fetching))

    def _pace(self) -> float:
        """Messages the worker took a second over its last pulls (0: unknown yet)."""
        taken = self._taken
        if len(taken) < 2:
            return 0.0
        span = time.monotonic() - taken[0][0]
        return sum(n for _, n in taken) / span if span > 0 else 0.0

    def _tune_ahead(self, waited: bool, count: int) -> None:
        """One more pull (of ``count``) in flight when the worker had to wait for the
        oldest (the round trip outlasts its work on a batch) and its pace takes one
        more within a quarter of READ_AHEAD_FRESH_S, so that what is held ahead is
        delivered, not given back stale (a give-back counts in Pub/Sub's
        delivery_attempt); one fewer when the next was back already as well, or the
        pace no longer takes them all in time."""
        within = self._pace() * READ_AHEAD_FRESH_S / 4
        depth = self.ahead_depth
        if waited and depth < MAX_READ_AHEAD and within >= count * (depth + 1):
            self.ahead_depth = depth + 1
        elif depth > 1 and (within < count * depth or (self._ahead and self._ahead[0][2].done())):
            self.ahead_depth = depth - 1

    def _take_ahead(self, max_messages: int) -> tuple[list[Any], bool] | None:
        """The oldest read-ahead batch: (at most ``max_messages`` messages, whether the
        subscription may hold more), or None when it came back empty (maybe nothing
        then, something now) or stale (it goes back at once). A surplus stays ahead."""
        started, count, fetching = self._ahead.popleft()
        self._tune_ahead(not fetching.done(), count)
        batch = fetching.result()  # its failure is this pull's failure
        if not batch:
            return None
        if time.monotonic() - started > READ_AHEAD_FRESH_S:
            self.ahead_depth = 1  # the worker's pace did not take it in time
            self.give_back(batch)
            return None
        if len(batch) > max_messages:
            # the surplus stays ahead for the next pull: given back, it would count as
            # a delivery in Pub/Sub's delivery_attempt without having run
            surplus: Future[list[Any]] = Future()
            surplus.set_result(batch[max_messages:])
            self._ahead.appendleft((started, len(batch) - max_messages, surplus))
            return batch[:max_messages], True
        return batch, len(batch) >= count

    def give_back(self, messages: Sequence[Any]) -> None:
        """Messages fetched but never delivered: steadyq counted no attempt (Pub/Sub's
        ``delivery_attempt`` did, as for its own client's buffered messages)."""
        if messages:
            with contextlib.suppress(BackendError):
                self.modify([m.ack_id for m in messages], 0)

    # -- leases -----------------------------------------------------------------

    def lease_later(self, ack_ids: Sequence[str], deadline_s: int) -> None:
        """Set the lease of freshly pulled messages in the background: until it lands
        the subscription's ack deadline (10 s at least) holds them. Every later ack,
        nack or extension waits for it first (:meth:`leased`), so it never overtakes
        them."""
        leasing = self.executor().submit(self.lease, ack_ids, deadline_s)
        with self._lease_lock:
            self._leasing.append(leasing)

    def lease(self, ack_ids: Sequence[str], deadline_s: int) -> None:
        """Set the lease of freshly pulled messages; ack ids the server refuses (an
        exactly-once subscription that redelivered them meanwhile) are leases lost."""
        refused = self.modify(ack_ids, deadline_s)
        if refused:
            with self._lease_lock:
                self._refused |= refused

    def leased(self) -> None:
        """Wait for the leases set after earlier pulls; their failure surfaces here.

        Acks, nacks and extensions wait, so that none is overtaken by a lease on its
        way; pulls do not (they concern other messages). The worker settles on another
        thread than it pulls: whoever waits holds the lock, so no call goes ahead while
        a lease taken from the list is still on its way."""
        with self._lease_lock:
            leasing, self._leasing = self._leasing, []
            failed: BaseException | None = None
            for future in leasing:
                try:
                    future.result()
                except BaseException as exc:
                    failed = failed or exc
            if failed is not None:
                raise failed

    def refused_of(self, ack_ids: Iterable[str]) -> set[str]:
        """Those of ``ack_ids`` whose lease the server refused to set after their pull.
        Each refusal is told once: the caller's settlements of all ``ack_ids`` are then
        settled or lost, so none is remembered further."""
        if not self._refused:
            return set()
        with self._lease_lock:
            asked = set(ack_ids)
            refused = self._refused & asked
            self._refused -= asked
            return refused

    # -- acknowledge, modify ack deadline -----------------------------------------

    def ack(self, subscription: str, ack_ids: Sequence[str]) -> set[str]:
        from google.pubsub_v1.types import AcknowledgeRequest

        return self._per_chunk(
            "acknowledge", "acknowledge", AcknowledgeRequest, subscription, ack_ids
        )

    def modify(self, ack_ids: Sequence[str], deadline_s: int) -> set[str]:
        return self.modify_on(self._subscription(), ack_ids, deadline_s)

    def modify_on(self, subscription: str, ack_ids: Sequence[str], deadline_s: int) -> set[str]:
        from google.pubsub_v1.types import ModifyAckDeadlineRequest

        return self._per_chunk(
            "modify_ack_deadline",
            "modify ack deadline",
            ModifyAckDeadlineRequest,
            subscription,
            ack_ids,
            ack_deadline_seconds=deadline_s,
        )

    def _per_chunk(
        self,
        method: str,
        what: str,
        request_type: Any,
        subscription: str,
        ack_ids: Sequence[str],
        **fields: Any,
    ) -> set[str]:
        """Call the subscriber's ``method`` once per MAX_IDS_PER_CALL ack ids; return the
        ack ids the server refused (exactly-once delivery only: the others were applied).

        A refusal marked transient is asked again a few times; one that stays, or a
        permanent one (``PERMANENT_FAILURE_INVALID_ACK_ID``: the ack id expired or the
        message was delivered again), is returned: never an ack believed done."""
        call = getattr(self._api()[1], method)
        refused: set[str] = set()
        for start in range(0, len(ack_ids), MAX_IDS_PER_CALL):
            chunk = list(ack_ids[start : start + MAX_IDS_PER_CALL])
            for attempt in range(TRANSIENT_TRIES):
                try:
                    call(
                        request=_raw(
                            request_type, subscription=subscription, ack_ids=chunk, **fields
                        ),
                        retry=None,
                        timeout=RPC_TIMEOUT_S,
                    )
                    break
                except Exception as exc:
                    failures = ack_id_failures(exc)
                    if failures is None:
                        raise translate(exc, what) from exc
                    if not failures:  # refused without saying which: none is done
                        failures = dict.fromkeys(chunk, "PERMANENT_FAILURE_UNKNOWN")
                transient = [a for a in chunk if failures.get(a, "").startswith("TRANSIENT_")]
                refused.update(a for a in chunk if a in failures and a not in transient)
                chunk = transient
                if not chunk:
                    break
                if attempt + 1 < TRANSIENT_TRIES:
                    time.sleep(0.1 * 2**attempt)
            else:
                refused.update(chunk)  # still refused, if only for now: not done
        return refused

    def close(self) -> None:
        """Give back what was fetched ahead, let the leases on their way land, stop the
        pool. The API clients are the queue's to close."""
        while self._ahead:  # whatever was fetched ahead goes back
            with contextlib.suppress(BackendError):
                self.give_back(self._ahead.popleft()[2].result())
        with contextlib.suppress(BackendError):
            self.leased()
        with self._pool_lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)


class PubSubDeadLetters:
    """The reads, replays and purges of a queue's dead-letter subscription.

    There is no way to read a Pub/Sub subscription without leasing what is read:
    letters given back right after each pull would be pulled again instead of the
    next ones. So a scan holds what it read until it reaches the end, then gives it
    all back (ack deadline 0); a reader that dies meanwhile holds the letters for its
    lease at most (10 s for the reads, 60 s for replay and purge)."""

    def __init__(self, transport: PubSubTransport, names: Callable[[], _Names]) -> None:
        self._transport = transport
        self._names = names  # the queue's, resolved on first use

    @contextlib.contextmanager
    def scan(self, lease_s: int = DLQ_READ_LEASE_S) -> Iterator[list[_Letter]]:
        """Lease every letter on the DLQ subscription for ``lease_s`` (renewed while the
        scan runs); give back at once, when the caller is done, those it left in the
        list (acked ones are removed by :meth:`remove`)."""
        transport = self._transport
        subscription = self._names().dlq_subscription
        held: dict[str, _Letter] = {}
        seen: set[str] = set()
        extra: list[str] = []  # ack ids of copies of messages already held
        leased: list[str] = []  # every ack id held, in the order read
        renewed = time.monotonic()
        try:
            while True:
                batch = transport.pull_once(subscription, MAX_PULL)
                if not batch:
                    break
                if time.monotonic() - renewed > lease_s / 2:
                    # a long scan: what was read first must not come back before the end
                    transport.modify_on(subscription, leased, lease_s)
                    renewed = time.monotonic()
                ack_ids = [m.ack_id for m in batch]
                transport.modify_on(subscription, ack_ids, lease_s)
                leased += ack_ids
                for m in batch:
                    if m.message.message_id in seen:
                        extra.append(m.ack_id)
                        continue
                    seen.add(m.message.message_id)
                    letter = _letter_of(m.message)
                    if letter.message_id in held:
                        held[letter.message_id].ack_ids.append(m.ack_id)
                    else:
                        held[letter.message_id] = _Letter(letter, [m.ack_id])
            letters = sorted(
                held.values(), key=lambda x: (x.letter.dead_lettered_at, x.letter.message_id)
            )
            kept = list(letters)
            yield kept
        finally:
            give_back = [a for x in held.values() for a in x.ack_ids] + extra
            if give_back:
                with contextlib.suppress(BackendError):
                    transport.modify_on(subscription, give_back, 0)

    def remove(self, letters: Sequence[_Letter]) -> None:
        """Ack letters for good; they are then not given back."""
        ack_ids = [a for x in letters for a in x.ack_ids]
        if ack_ids:
            self._transport.ack(self._names().dlq_subscription, ack_ids)
        for x in letters:
            x.ack_ids.clear()

    def find(self, where: DlqFilter | None = None) -> list[DeadLetter]:
        where = where or DlqFilter()
        with self.scan() as letters:
            found = [x.letter for x in letters if where.matches(x.letter)]
        return found if where.limit is None else found[: where.limit]

    def get(self, message_id: str) -> DeadLetter:
        for letter in self.find(DlqFilter(message_ids=(message_id,))):
            return letter
        raise NotFound(f"no dead letter with message id {message_id!r}")

    def replay(
        self, where: DlqFilter, *, max_replays: int = 3, dry_run: bool = False
    ) -> list[tuple[DeadLetter, str | None]]:
        topic = self._names().topic
        with self.scan(DLQ_WRITE_LEASE_S) as letters:
            chosen = [x for x in letters if where.matches(x.letter)]
            if where.limit is not None:
                chosen = chosen[: where.limit]
            go = [x for x in chosen if not dry_run and x.letter.replays < max_replays]
            new_ids = self._transport.publish(
                topic,
                [
                    (
                        x.letter.payload,
                        {**x.letter.attributes, A_REPLAYS: str(x.letter.replays + 1)},
                    )
                    for x in go
                ],
            )
            self.remove(go)
        by_letter = {id(x): new for x, new in zip(go, new_ids, strict=True)}
        return [(x.letter, by_letter.get(id(x))) for x in chosen]

    def purge(self, where: DlqFilter) -> int:
        with self.scan(DLQ_WRITE_LEASE_S) as letters:
            doomed = [x for x in letters if where.matches(x.letter)]
            if where.limit is not None:
                doomed = doomed[: where.limit]
            self.remove(doomed)
        return len(doomed)


class PubSubQueue(Queue):
    """The queue contract on a Pub/Sub subscription (see the module docstring).

    The queue resolves its names, counts attempts in its store and decides what a
    settlement does (whose lease is still its own, what is acked, nacked or
    dead-lettered, which counts can go); the RPCs and the lease state between pull and
    settle are its :class:`PubSubTransport`'s, the DLQ subscription's reads, replays
    and purges its :class:`PubSubDeadLetters`'."""

    scheme = "pubsub"
    clock_driven = False
    pull_batch = MAX_PULL  # the worker asks for one full pull at a time
    counts_backlog = False
    settles_concurrently = True  # acks, nacks and dead letters take their own locks
    rejection_budget_s = 0.005  # a dead letter is a publish RPC, then an ack RPC

    def __init__(
        self,
        project: str,
        name: str,
        *,
        store: AttemptCounter | None = None,
        clock: Callable[[], float] = time.time,
        dlq_topic: str | None = None,
        dlq_subscription: str | None = None,
        topic: str | None = None,
        pull_concurrency: int = 4,
    ) -> None:
        if not project or not name or "/" in name:
            raise ConfigError(f"pubsub:// needs a project and one name, not {project!r}/{name!r}")
        self.project = project
        self.name = name
        self._prefix = f"{name}/"  # of the attempt counts' keys: subscription/message_id
        self.clock = clock
        self._store = store
        self._owns_store = False
        self._dlq_topic_id = dlq_topic
        self._topic_id = topic
        self._dlq_subscription_id = dlq_subscription
        self._lock = threading.Lock()  # the API clients
        self._names: _Names | None = None
        self._clients: tuple[Any, Any] | None = None
        self._forget: list[str] = []  # keys of settled messages whose counts can go
        self._forget_lock = threading.Lock()  # settle may run on more than one thread
        self._pruned = False  # old attempt counts dropped (once per queue object)
        self._transport = PubSubTransport(
            self._api, self._subscription, pull_concurrency=pull_concurrency
        )
        self._dead_letters = PubSubDeadLetters(self._transport, self._resolve)

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        clock: Callable[[], float] = time.time,
        store: AttemptCounter | None = None,
    ) -> PubSubQueue:
        """``pubsub://PROJECT/NAME[?topic=ID&dlq_topic=ID&dlq_subscription=ID]``.

        ``topic`` makes NAME the subscription of that topic without asking the API
        (for credentials that may pull but not read subscription settings).

        Raises:
            ConfigError: the URL is malformed.
        """
        parts = urlsplit(url)
        if parts.scheme != "pubsub" or not parts.netloc:
            raise ConfigError(f"expected pubsub://PROJECT/NAME, not {url!r}")
        name = parts.path.strip("/")
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        unknown = set(query) - {"topic", "dlq_topic", "dlq_subscription"}
        if unknown:
            raise ConfigError(f"unknown pubsub:// parameter(s): {', '.join(sorted(unknown))}")
        return cls(
            parts.netloc,
            name,
            store=store,
            clock=clock,
            dlq_topic=query.get("dlq_topic"),
            dlq_subscription=query.get("dlq_subscription"),
            topic=query.get("topic"),
        )

    # -- plumbing ---------------------------------------------------------------

    def use_store(self, store: EventStore) -> None:
        self._store = store
        self._owns_store = True

    def _attempt_store(self) -> AttemptCounter:
        if self._store is None:
            raise ConfigError("a pubsub:// queue counts attempts in a telemetry store; none given")
        return self._store

    def _api(self) -> tuple[Any, Any]:
        with self._lock:
            if self._clients is None:
                self._clients = clients()
            return self._clients

    def _resolve(self) -> _Names:
        """Ask the API whether NAME is a subscription or a topic (once)."""
        if self._names is None:
            self._names = resolve_names(
                self._api(),
                self.project,
                self.name,
                topic=self._topic_id,
                dlq_topic=self._dlq_topic_id,
                dlq_subscription=self._dlq_subscription_id,
            )
        return self._names

    def _subscription(self) -> str:
        names = self._resolve()
        if names.subscription is None:
            raise ConfigError(
                f"pubsub://{self.project}/{self.name} is a topic; pulling needs a subscription"
            )
        return names.subscription

    def _key(self, message_id: str) -> str:
        return self._prefix + message_id

    # -- publish ----------------------------------------------------------------

    def publish(self, body: bytes, attributes: Attributes | None = None) -> str:
        return self.publish_batch([(body, attributes)])[0]

    def publish_batch(self, items: Iterable[tuple[bytes, Attributes | None]]) -> list[str]:
        checked = [(bytes(body), check_publish_args(body, attrs)) for body, attrs in items]
        for _, attrs in checked:
            if any(key.startswith(PREFIX) for key in attrs):
                raise ConfigError(f"attribute names starting with {PREFIX!r} are steadyq's own")
        if self._names is None and self._topic_id is None:
            # a topic URL needs no admin read (publishers rarely may): publish to it
            # straight away, and ask the API only when no topic has that name
            from google.api_core import exceptions as gexc

            direct = self._api()[0].topic_path(self.project, self.name)
            try:
                return self._transport.publish(direct, checked)
            except BackendUnavailable as exc:
                if not isinstance(exc.__cause__, gexc.NotFound) or not checked:
                    raise
        return self._transport.publish(self._resolve().topic, checked)

    # -- pull -------------------------------------------------------------------

    def read_ahead(self, max_messages: int) -> None:
        self._transport.read_ahead(max_messages)

    def pull(self, max_messages: int, lease_s: float) -> list[Delivery]:
        check_pull_args(max_messages, lease_s)
        self._subscription()
        store = self._attempt_store()
        if not self._pruned:
            # counts of messages that never came back here (settled by a worker with
            # another store, purged, expired) would otherwise stay for good
            store.prune_attempts(ATTEMPTS_KEPT_S)
            self._pruned = True
        received = self._transport.pull(max_messages)
        if not received:
            return []
        lease = _deadline(lease_s)
        # one pass over the raw protobuf; the rows sort on their leading fields, in C
        # (no key function): publish time, then the message id as a number (Pub/Sub's
        # ids are decimal), then the order received (a message pulled twice at once),
        # so the protobuf itself is never compared
        rows = []
        for i, m in enumerate(received):
            msg = m.message
            stamp = msg.publish_time
            message_id = msg.message_id
            rows.append(
                (stamp.seconds, stamp.nanos, len(message_id), message_id, i, m.ack_id,
                 m.delivery_attempt, msg)
            )  # fmt: skip
        rows.sort()
        prefix = self._prefix
        now = self.clock()
        # a first delivery by Pub/Sub's own count (delivery_attempt 1: a dead-letter
        # policy is set) needs no count of steadyq's: were it lost with its worker,
        # Pub/Sub says 2 next time, and that delivery is counted here as any other
        counted = [prefix + row[3] for row in rows if row[6] != 1]
        try:
            counts = store.count_attempts(counted) if counted else {}
        except BaseException:
            # without a durable count the delivery must not run: give the messages back
            self._transport.give_back(received)
            raise
        if lease != self._resolve().ack_deadline_s:
            self._transport.lease_later([row[5] for row in rows], lease)
        out: list[Delivery] = []
        append = out.append
        until = now + lease
        for seconds, nanos, _, message_id, _, ack_id, delivery_attempt, msg in rows:
            if delivery_attempt == 1:
                attempt, token, last_error, runs = 1, "0 " + ack_id, None, 0
            else:
                attempts, last_error, runs = counts[prefix + message_id]
                attempt = attempts if attempts >= delivery_attempt else delivery_attempt
                token = f"{attempts} {ack_id}"
            replays = 0
            attrs: dict[str, str] = {}
            if msg.attributes:
                # copied once, from the map's items (dict() of the map looks each key up
                # again: ~0.4 µs more for three attributes), filtered only when steadyq's
                # own are present (a replay)
                attrs = dict(msg.attributes.items())
                for name in attrs:
                    if name.startswith(PREFIX):  # steadyq's own: the replay count, if any
                        replays = _int(attrs.get(A_REPLAYS))
                        attrs = {k: v for k, v in attrs.items() if not k.startswith(PREFIX)}
                        break
            append(
                Delivery(
                    message_id,
                    msg.data,  # bytes already: the raw protobuf's
                    attrs,
                    attempt,
                    seconds + nanos / 1e9,
                    token,
                    until,
                    replays,
                    last_error,
                    runs,
                )
            )
        return out

    # -- settle -----------------------------------------------------------------

    def _split(
        self, settlements: Sequence[Settlement]
    ) -> tuple[list[tuple[Settlement, str, str, bool]], list[Settlement]]:
        """(settlements whose lease is still theirs, with their ack ids, count keys and
        whether the store holds a count of theirs; the others).

        A lease is still a delivery's when nobody pulled the message since (the
        store's count is the one it was pulled with) and an exactly-once subscription
        did not refuse to set it after the pull. A first delivery told by Pub/Sub
        (nobody counted it: its token says 0) still well inside its lease needs no
        look at the store: while the lease runs Pub/Sub hands the message to nobody
        else, and a redelivery after it would be counted (delivery_attempt 2 or more).
        """
        prefix = self._prefix
        fresh_until = self.clock() + LEASE_CHECK_MARGIN_S
        held: list[tuple[Settlement, str, str, bool]] = []
        lost: list[Settlement] = []
        check: dict[int, str] = {}  # index in held -> the count the token carries
        for s in settlements:
            d = s.delivery
            count, _, ack_id = d.lease_token.partition(" ")
            if count != "0" or d.leased_until <= fresh_until:
                check[len(held)] = count
            held.append((s, ack_id, prefix + d.message_id, count != "0"))
        if check:
            current = self._attempt_store().attempts_of([held[i][2] for i in check]).get
            kept: list[tuple[Settlement, str, str, bool]] = []
            for i, h in enumerate(held):
                pulled_with = check.get(i)
                if pulled_with is None or current(h[2], 0) == int(pulled_with):
                    kept.append(h)
                else:
                    lost.append(h[0])
            held = kept
        # every settlement's ack id, the lost ones' too: each refusal is told once
        refused = self._transport.refused_of(_token(s.delivery)[1] for s in settlements)
        if refused:
            lost += [s for s, ack_id, _, _ in held if ack_id in refused]
            held = [h for h in held if h[1] not in refused]
        return held, lost

    def settle(
        self, settlements: Sequence[Settlement], *, events: Sequence[Event] = ()
    ) -> SettleResult:
        if events:
            raise ValueError("a Pub/Sub queue has no colocated store: write events to the store")
        transport = self._transport
        transport.leased()
        if not settlements:
            return SettleResult()
        subscription = self._subscription()
        names = self._resolve()
        held, lost = self._split(settlements)
        start = [
            key
            for s, _, key, counted in held
            if not counted and s.action == "nack" and (s.detail is not None or s.ran)
        ]
        if start:
            # a first delivery nobody counted whose error or run must be kept gets its
            # count (1, this delivery) before Pub/Sub hears of the nack: a redelivery
            # pulled the moment after must find it, and raise it to 2
            self._attempt_store().count_attempts(start)
        acks: list[str] = []
        dead: list[Settlement] = []
        delays: dict[int, list[str]] = {}
        for s, ack_id, _, _ in held:
            action = s.action
            if action == "ack":
                acks.append(ack_id)
            elif action == "nack":
                delays.setdefault(_delay(s.delay_s), []).append(ack_id)
            else:
                acks.append(ack_id)
                dead.append(s)
        if dead:
            now = self.clock()
            # confirmed before anything is acked: a failure here applies nothing
            letters = [_letter_message(s, subscription, now) for s in dead]
            transport.publish(names.dlq_topic, letters)
        refused = transport.ack(subscription, acks) if acks else set()
        for delay, ack_ids in sorted(delays.items()):
            refused |= transport.modify_on(subscription, ack_ids, delay)
        if refused:
            # an exactly-once subscription refused these ack ids: the lease was lost
            # (expired, or the message delivered again), so nothing was applied for them
            lost += [s for s, ack_id, _, _ in held if ack_id in refused]
            held = [h for h in held if h[1] not in refused]
        errors: dict[str, str | None] = {}
        ran: list[str] = []
        forget: list[str] = []
        for s, _, key, counted in held:
            if s.action != "nack":
                if counted:  # a first delivery told by Pub/Sub has no count to drop
                    forget.append(key)
                continue
            if s.detail is not None:
                errors[key] = s.detail
            if s.ran:
                ran.append(key)
        with self._forget_lock:
            self._forget += forget
            due = len(self._forget) >= FORGET_BATCH
        # settled counts are dropped in bulk: one write per many settles, not one each
        if errors or ran or due:
            self._forget_settled(errors, ran)
        return SettleResult(tuple(h[0] for h in held), tuple(lost))

    def _forget_settled(
        self, errors: Mapping[str, str | None] | None = None, ran: Sequence[str] = ()
    ) -> None:
        with self._forget_lock:
            forget, self._forget = self._forget, []
        try:
            self._attempt_store().settle_attempts(errors or {}, forget, ran)
        except BaseException:
            with self._forget_lock:
                self._forget[:0] = forget
            raise

    def extend(self, delivery: Delivery, lease_s: float) -> Delivery:
        check_pull_args(1, lease_s)
        self._transport.leased()
        if not self._split([Settlement.ack(delivery)])[0]:
            raise LeaseLost(f"message {delivery.message_id} was leased again")
        lease = _deadline(lease_s)
        if self._transport.modify([_token(delivery)[1]], lease):
            raise LeaseLost(f"message {delivery.message_id}: Pub/Sub refused its ack id")
        return replace(delivery, leased_until=self.clock() + lease)

    # -- stats --------------------------------------------------------------------

    def stats(self) -> QueueStats:
        if emulator_host():
            return QueueStats(None, None, None, None, None, notes=(EMULATOR_NOTE,))
        return monitoring_stats(self._resolve())

    # -- dead letters -----------------------------------------------------------

    def dlq_list(self, where: DlqFilter | None = None) -> list[DeadLetter]:
        return self._dead_letters.find(where)

    def dlq_get(self, message_id: str) -> DeadLetter:
        return self._dead_letters.get(message_id)

    def dlq_replay(
        self, where: DlqFilter, *, max_replays: int = 3, dry_run: bool = False
    ) -> list[tuple[DeadLetter, str | None]]:
        return self._dead_letters.replay(where, max_replays=max_replays, dry_run=dry_run)

    def dlq_purge(self, where: DlqFilter) -> int:
        return self._dead_letters.purge(where)

    def close(self) -> None:
        self._transport.close()  # read-ahead given back, leases landed, pool stopped
        if self._forget and self._store is not None:
            with contextlib.suppress(BackendError):
                self._forget_settled()
        with self._lock:
            api, self._clients = self._clients, None
        if api is not None:
            for client in api:
                with contextlib.suppress(Exception):
                    client.transport.close()
        if self._owns_store and self._store is not None:
            self._store.close()
            self._store = None


# -- what the queue does without holding state of its own ---------------------------


def resolve_names(
    api: tuple[Any, Any],
    project: str,
    name: str,
    *,
    topic: str | None = None,
    dlq_topic: str | None = None,
    dlq_subscription: str | None = None,
) -> _Names:
    """What ``pubsub://PROJECT/NAME`` names, asked of the API with ``api`` (publisher,
    subscriber): a subscription and its topic, or a topic (``topic`` given: NAME is its
    subscription, nothing is read); the dead-letter names ``dlq_topic`` and
    ``dlq_subscription`` override (see the module docstring).

    Raises:
        BackendUnavailable: no subscription or topic has that name, or the API is
            unreachable or refuses.
    """
    from google.api_core import exceptions as gexc

    publisher, subscriber = api
    sub_path = subscriber.subscription_path(project, name)
    subscription: str | None = sub_path
    ack_deadline = 0  # unknown: every pull sets its lease
    dead_letter_topic = None
    try:
        if topic is not None:  # named in the URL: nothing to read
            raise _Given
        with mapped(f"get subscription {name}", missing_is_outage=False):
            sub = subscriber.get_subscription(
                subscription=sub_path, retry=None, timeout=RPC_TIMEOUT_S
            )
        topic_path = sub.topic
        ack_deadline = sub.ack_deadline_seconds or 10
        if sub.dead_letter_policy and sub.dead_letter_policy.dead_letter_topic:
            dead_letter_topic = sub.dead_letter_policy.dead_letter_topic
    except NotFound as missing:
        subscription = None
        topic_path = publisher.topic_path(project, name)
        try:
            with mapped(f"get topic {name}", missing_is_outage=False):
                publisher.get_topic(topic=topic_path, retry=None, timeout=RPC_TIMEOUT_S)
        except NotFound:
            raise BackendUnavailable(
                f"Pub/Sub project {project!r} has no subscription or topic named"
                f" {name!r} (create them with `steadyq pubsub setup`)"
            ) from missing.__cause__
    except _Given:
        topic_path = publisher.topic_path(project, topic)
    except BackendUnavailable as exc:
        if isinstance(exc.__cause__, gexc.PermissionDenied):
            raise BackendUnavailable(
                f"{exc}; steadyq reads the subscription to find its topic: grant"
                " pubsub.subscriptions.get (roles/pubsub.viewer) or name the topic"
                f" in the URL: pubsub://{project}/{name}?topic=TOPIC"
            ) from exc.__cause__
        raise
    topic_id = topic_path.rsplit("/", 1)[-1]
    dlq_topic_id = dlq_topic
    if dlq_topic_id is None and dead_letter_topic is not None:
        dlq_topic_id = dead_letter_topic.rsplit("/", 1)[-1]
    dlq_topic_id, dlq_sub_id = dlq_names(topic_id, dlq_topic_id)
    return _Names(
        project=project,
        topic=topic_path,
        subscription=subscription,
        dlq_topic=publisher.topic_path(project, dlq_topic_id),
        dlq_subscription=subscriber.subscription_path(project, dlq_subscription or dlq_sub_id),
        ack_deadline_s=int(ack_deadline),
    )


def monitoring_stats(names: _Names) -> QueueStats:
    """Backlog from Cloud Monitoring (real Pub/Sub only; figures lag ~1-2 min)."""
    unknown = "in flight and delayed are not told apart by Pub/Sub"
    try:
        from google.cloud import monitoring_v3
    except ImportError:
        return QueueStats(
            None,
            None,
            None,
            None,
            None,
            notes=("backlog figures need google-cloud-monitoring: steadyq[monitoring]",),
        )

    def latest(metric: str, subscription: str | None) -> float | None:
        if subscription is None:
            return None
        now = time.time()
        interval = monitoring_v3.TimeInterval(
            end_time={"seconds": int(now)}, start_time={"seconds": int(now - 600)}
        )
        sub_id = subscription.rsplit("/", 1)[-1]
        with mapped("read Cloud Monitoring"):
            request = monitoring_v3.ListTimeSeriesRequest(
                name=f"projects/{names.project}",
                filter=f'metric.type = "pubsub.googleapis.com/subscription/{metric}"'
                f' AND resource.labels.subscription_id = "{sub_id}"',
                interval=interval,
                view=monitoring_v3.ListTimeSeriesRequest.TimeSeriesView.FULL,
            )
            series = monitoring_v3.MetricServiceClient().list_time_series(request=request)
            for item in series:
                for point in item.points:  # newest first
                    value = point.value
                    return float(value.int64_value or value.double_value)
        return None

    backlog = latest("num_undelivered_messages", names.subscription)
    oldest = latest("oldest_unacked_message_age", names.subscription)
    dead = latest("num_undelivered_messages", names.dlq_subscription)
    return QueueStats(
        ready=None if backlog is None else int(backlog),
        in_flight=None,
        delayed=None,
        dead_lettered=None if dead is None else int(dead),
        oldest_unacked_age_s=oldest,
        notes=(
            "from Cloud Monitoring, a minute or two behind; ready counts every"
            f" undelivered message ({unknown})",
        ),
    )


def _raw(request_type: Any, **fields: Any) -> Any:
    """A request built on the raw protobuf: proto-plus would convert each ack id."""
    return request_type.wrap(request_type.pb()(**fields))


def _deadline(seconds: float) -> int:
    """An ack deadline Pub/Sub accepts for a lease of ``seconds`` (1 to 600 s)."""
    return max(1, min(MAX_ACK_DEADLINE_S, math.ceil(seconds)))


def _delay(seconds: float) -> int:
    """The ack deadline that makes a nacked message come back after ``seconds``."""
    return max(0, min(MAX_ACK_DEADLINE_S, math.ceil(seconds)))


def _token(delivery: Delivery) -> tuple[int, str]:
    count, _, ack_id = delivery.lease_token.partition(" ")
    return int(count), ack_id


def _int(text: str | None) -> int:
    try:
        return int(text or 0)
    except ValueError:
        return 0


def _float(text: str | None, default: float) -> float:
    try:
        return float(text) if text else default
    except ValueError:
        return default


def _clip(text: str) -> str:
    raw = text.encode("utf-8")
    if len(raw) <= DETAIL_MAX:
        return text
    return raw[: DETAIL_MAX - 3].decode("utf-8", "ignore") + "…"


def _epoch(stamp: Any) -> float:
    """Epoch seconds of a protobuf Timestamp."""
    return float(stamp.seconds) + float(stamp.nanos) / 1e9


def _letter_message(s: Settlement, source: str, now: float) -> tuple[bytes, dict[str, str]]:
    """What a dead-letter publishes to the DLQ topic (read back by :func:`_letter_of`):
    the body, the user's attributes and steadyq's, ``source`` the subscription."""
    d = s.delivery
    attrs = dict(d.attributes)
    attrs.update(
        {
            A_MESSAGE_ID: d.message_id,
            A_REASON: s.reason or "unspecified",
            A_DETAIL: _clip(s.detail or ""),
            A_ATTEMPTS: str(d.attempt),
            A_SOURCE: source,
            A_PUBLISHED_AT: repr(d.published_at),
            A_DEAD_LETTERED_AT: repr(now),
            A_REPLAYS: str(d.replays),
        }
    )
    if s.request_id:
        attrs[A_REQUEST_ID] = s.request_id
    return d.body, attrs


def _letter_of(msg: Any) -> DeadLetter:
    attrs = dict(msg.attributes.items())
    sent_at = _epoch(msg.publish_time)
    forwarded = PUBSUB_DLQ_COUNT in attrs and A_REASON not in attrs
    return DeadLetter(
        message_id=attrs.get(A_MESSAGE_ID) or msg.message_id,
        request_id=attrs.get(A_REQUEST_ID),
        reason=attrs.get(A_REASON) or (DELIVERY_ATTEMPTS_EXHAUSTED if forwarded else "unspecified"),
        detail=attrs.get(A_DETAIL)
        or (
            f"forwarded by the dead-letter policy of {attrs.get(PUBSUB_DLQ_SOURCE, '?')}"
            if forwarded
            else ""
        ),
        attempts=_int(attrs.get(A_ATTEMPTS) or attrs.get(PUBSUB_DLQ_COUNT)),
        payload=bytes(msg.data),
        attributes={
            k: v
            for k, v in attrs.items()
            if not k.startswith(PREFIX) and not k.startswith(PUBSUB_DLQ_PREFIX)
        },
        published_at=_float(attrs.get(A_PUBLISHED_AT), sent_at),
        dead_lettered_at=_float(attrs.get(A_DEAD_LETTERED_AT), sent_at),
        replays=_int(attrs.get(A_REPLAYS)),
    )


# -- setup ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SetupStep:
    """One resource ``setup`` looked at: ``kind`` (topic / subscription), its full path,
    whether it was created now (False: it existed and was left as it was), what it is
    like (``note``) and, for a subscription that existed, how it differs from what
    was asked (``differs``)."""

    kind: str
    path: str
    created: bool
    note: str = ""
    differs: tuple[str, ...] = ()
    ack_deadline_s: int | None = None  # a subscription's, as it is now


def _span(seconds: float) -> str:
    """A duration as setup prints it: 600 s, 2 h, 7 d."""
    if seconds >= 86400 and seconds % 86400 == 0:
        return f"{int(seconds // 86400)} d"
    if seconds >= 3600 and seconds % 3600 == 0:
        return f"{int(seconds // 3600)} h"
    return f"{seconds:g} s"


def describe_subscription(sub: Any) -> str:
    """The settings of a Subscription that matter to steadyq, in one line."""
    parts = [f"ack deadline {sub.ack_deadline_seconds} s"]
    policy = sub.dead_letter_policy
    if policy and policy.dead_letter_topic:
        parts.append(
            f"max delivery attempts {policy.max_delivery_attempts or 5}"
            f" -> {policy.dead_letter_topic.rsplit('/', 1)[-1]}"
        )
    else:
        parts.append("no dead-letter policy")
    retention = sub.message_retention_duration
    seconds = retention.total_seconds() if retention else DEFAULT_RETENTION_S
    parts.append(f"retention {_span(seconds)}")
    retry = sub.retry_policy
    if retry and (retry.minimum_backoff or retry.maximum_backoff):
        low = retry.minimum_backoff.total_seconds() if retry.minimum_backoff else 10
        high = retry.maximum_backoff.total_seconds() if retry.maximum_backoff else 600
        parts.append(f"retry backoff {_span(low)} to {_span(high)}")
    else:
        parts.append("no retry policy")
    if sub.enable_exactly_once_delivery:
        parts.append("exactly-once delivery")
    return ", ".join(parts)


def setup(
    project: str,
    topic: str,
    subscription: str,
    *,
    ack_deadline_s: int = DEFAULT_ACK_DEADLINE_S,
    max_delivery_attempts: int = 5,
    min_backoff_s: float = 10.0,
    max_backoff_s: float = 600.0,
    dlq_topic: str | None = None,
    retention_s: float = DEFAULT_RETENTION_S,
    exactly_once: bool = False,
) -> list[SetupStep]:
    """Create, if missing, the topic, its subscription (ack deadline, retry policy,
    dead-letter policy, retention, exactly-once delivery), the dead-letter topic and
    the subscription steadyq reads it through. Idempotent: what exists is left as it
    is, and the steps say how it differs from what was asked.

    Raises:
        ConfigError: a setting is out of Pub/Sub's range, or the driver is missing.
        BackendError: the API refused (BackendUnavailable when unreachable).
    """
    if not 10 <= ack_deadline_s <= MAX_ACK_DEADLINE_S:
        raise ConfigError("--ack-deadline must be between 10 and 600 seconds")
    if not 5 <= max_delivery_attempts <= 100:
        raise ConfigError("--max-delivery-attempts must be between 5 and 100 (Pub/Sub's range)")
    if not 0 <= min_backoff_s <= max_backoff_s <= MAX_ACK_DEADLINE_S:
        raise ConfigError("backoffs must satisfy 0 <= --min-backoff <= --max-backoff <= 600 s")
    if not MIN_RETENTION_S <= retention_s <= DEFAULT_RETENTION_S:
        raise ConfigError("--retention must be between 10 minutes and 7 days (Pub/Sub's range)")
    from google.api_core import exceptions as gexc
    from google.protobuf import duration_pb2
    from google.pubsub_v1 import DeadLetterPolicy, RetryPolicy, Subscription

    publisher, subscriber = clients()
    dlq_topic_id, dlq_sub_id = dlq_names(topic, dlq_topic)
    topic_path = publisher.topic_path(project, topic)
    dlq_topic_path = publisher.topic_path(project, dlq_topic_id)
    steps: list[SetupStep] = []

    def ensure_topic(path: str) -> None:
        try:
            with mapped(f"create topic {path}"):
                publisher.create_topic(name=path, retry=None, timeout=RPC_TIMEOUT_S)
            steps.append(SetupStep("topic", path, True))
        except BackendError as exc:
            if not isinstance(exc.__cause__, gexc.AlreadyExists):
                raise
            steps.append(SetupStep("topic", path, False))

    def ensure_subscription(sub: Any) -> None:
        try:
            with mapped(f"create subscription {sub.name}"):
                made = subscriber.create_subscription(
                    request=sub, retry=None, timeout=RPC_TIMEOUT_S
                )
            note = f"on {sub.topic}; {describe_subscription(made)}"
            made_deadline = made.ack_deadline_seconds
            steps.append(SetupStep("subscription", sub.name, True, note, (), made_deadline))
        except BackendError as exc:
            if not isinstance(exc.__cause__, gexc.AlreadyExists):
                raise
            with mapped(f"get subscription {sub.name}"):
                have = subscriber.get_subscription(
                    subscription=sub.name, retry=None, timeout=RPC_TIMEOUT_S
                )
            if have.topic != sub.topic:
                raise ConfigError(
                    f"subscription {sub.name} exists on {have.topic}, not on {sub.topic}"
                ) from None
            note = f"on {have.topic}; {describe_subscription(have)}"
            differs = _differences(have, sub)
            step = SetupStep(
                "subscription", sub.name, False, note, differs, have.ack_deadline_seconds
            )
            steps.append(step)

    def seconds(value: float) -> duration_pb2.Duration:
        return duration_pb2.Duration(seconds=int(value), nanos=int((value % 1) * 1e9))

    with clients_closed(publisher, subscriber):
        ensure_topic(topic_path)
        ensure_topic(dlq_topic_path)
        ensure_subscription(
            Subscription(
                name=subscriber.subscription_path(project, dlq_sub_id),
                topic=dlq_topic_path,
                # the shortest: a DLQ command that dies holds its letters 10 s at most
                ack_deadline_seconds=DLQ_ACK_DEADLINE_S,
                message_retention_duration=seconds(DEFAULT_RETENTION_S),
            )
        )
        ensure_subscription(
            Subscription(
                name=subscriber.subscription_path(project, subscription),
                topic=topic_path,
                ack_deadline_seconds=ack_deadline_s,
                message_retention_duration=seconds(retention_s),
                # both zero: no retry policy, Pub/Sub redelivers at once and steadyq's
                # nack delays are the only ones (a zero Duration would mean "default")
                retry_policy=RetryPolicy(
                    minimum_backoff=seconds(min_backoff_s),
                    maximum_backoff=seconds(max_backoff_s),
                )
                if max_backoff_s > 0
                else None,
                dead_letter_policy=DeadLetterPolicy(
                    dead_letter_topic=dlq_topic_path,
                    max_delivery_attempts=max_delivery_attempts,
                ),
                enable_exactly_once_delivery=exactly_once,
            )
        )
    return steps


def _differences(have: Any, asked: Any) -> tuple[str, ...]:
    """How an existing subscription differs from what setup would have made."""
    out: list[str] = []
    if have.ack_deadline_seconds != asked.ack_deadline_seconds:
        out.append(
            f"ack deadline {have.ack_deadline_seconds} s, not {asked.ack_deadline_seconds} s"
        )
    if bool(have.enable_exactly_once_delivery) != bool(asked.enable_exactly_once_delivery):
        state = "on" if have.enable_exactly_once_delivery else "off"
        out.append(f"exactly-once delivery is {state}")
    want = asked.dead_letter_policy
    got = have.dead_letter_policy
    if want and want.dead_letter_topic:
        if not got or got.dead_letter_topic != want.dead_letter_topic:
            out.append(f"dead-letter topic is not {want.dead_letter_topic}")
        elif (got.max_delivery_attempts or 5) != want.max_delivery_attempts:
            out.append(
                f"max delivery attempts {got.max_delivery_attempts or 5},"
                f" not {want.max_delivery_attempts}"
            )
    return tuple(out)


@contextlib.contextmanager
def clients_closed(*api: Any) -> Iterator[None]:
    try:
        yield
    finally:
        for client in api:
            with contextlib.suppress(Exception):
                client.transport.close()
