"""The shared queue: one PostgreSQL schema, safe for any number of workers on any hosts.

As on SQLite, a message's state is one column, ``visible_at`` (epoch seconds on the
*database's* clock): ready when ``visible_at <= now``; a pull moves it to the lease's
end and stamps a lease token, a nack to ``now + delay`` and clears the token. An
expired lease needs no sweeper: the row is simply ready again.

* **Claims**: one statement leases a batch: the oldest ready rows, found through the
  ``(visible_at, seq)`` index in availability order, locked ``FOR UPDATE SKIP LOCKED``
  (concurrent pullers pass over each other's rows instead of waiting), updated and
  returned. Settled rows leave the table (an ack deletes, a dead letter moves to
  ``dead_letters``), so the index holds only live messages however long the history.
* **Time**: ``now`` is ``statement_timestamp()`` of the database in every statement
  that compares or sets a lease or a delay; a host's drifting clock never matters.
  ``Delivery.leased_until`` is given on the caller's clock (its time when it asked,
  plus the lease), never later than the database's lease end, which is what a worker
  needs to extend leases in time. A test may inject a clock instead.
* **Wake-ups**: a publish sends ``NOTIFY`` on the schema's channel in its transaction;
  :meth:`PostgresQueue.wait_for_messages` blocks an idle puller on ``LISTEN`` until a
  publish or a timeout, so an idle worker starts at once. ``?notify=off`` (behind a
  transaction-pooling PgBouncer, where LISTEN cannot work) sends nothing and the wait
  is plain polling.
* **Colocated store**: the store's tables live in the same schema; a settlement, its
  events and its ledger rows commit in one transaction.
"""

from __future__ import annotations

import contextlib
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from steadyq._postgres import DB_NOW, PostgresDatabase, clean_text, driver_error, import_driver
from steadyq._sql import (
    DLQ_COLUMNS,
    POSTGRES,
    attrs_text,
    deliveries_of,
    dlq_where,
    letter_of,
)
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
from steadyq.errors import LeaseLost, NotFound
from steadyq.telemetry.events import Event
from steadyq.telemetry.store_postgres import (
    PostgresStore,
    ledger_ids,
    lock_requests,
    stored_rows,
    write_events,
)

if TYPE_CHECKING:
    import psycopg


# lease a batch: the oldest ready rows in availability order, skipping rows another
# claim holds right now
_PULL = f"""
UPDATE SQ.messages m SET attempts = m.attempts + 1, lease_token = %(token)s,
    visible_at = {DB_NOW} + %(lease)s
FROM (SELECT seq FROM SQ.messages WHERE visible_at <= {DB_NOW}
      ORDER BY visible_at, seq LIMIT %(n)s FOR UPDATE SKIP LOCKED) AS picked
WHERE m.seq = picked.seq
RETURNING m.seq, m.body, m.attributes, m.attempts, m.published_at, m.replays, m.last_error,
    m.runs
"""

# For this transaction only: no sequential scan and no sort. The claim's plan must not
# depend on statistics (autovacuum may be off): taken while the table was nearly empty,
# they make a sort of every row look cheaper than walking the index after a bulk
# publish. With these, the plan is the index walk at any size.
_INDEX_ONLY = (
    "SELECT set_config('enable_seqscan', 'off', true), set_config('enable_sort', 'off', true)"
)

_PUBLISH = f"""
INSERT INTO SQ.messages (body, attributes, published_at, visible_at, replays)
SELECT b, a, {DB_NOW}, {DB_NOW}, r
FROM unnest(%(bodies)b::bytea[], %(attrs)b::text[], %(replays)b::int[]) WITH ORDINALITY
    AS v (b, a, r, i)
ORDER BY i
RETURNING seq
"""

_ACK = """
DELETE FROM SQ.messages m USING unnest(%b::bigint[], %b::text[]) AS v (seq, token)
WHERE m.seq = v.seq AND m.lease_token = v.token
RETURNING m.seq
"""

_NACK = f"""
UPDATE SQ.messages m SET lease_token = NULL, visible_at = {DB_NOW} + v.delay,
    last_error = COALESCE(v.error, m.last_error), runs = m.runs + v.ran
FROM unnest(%(seqs)b::bigint[], %(tokens)b::text[], %(delays)b::float8[], %(errors)b::text[],
    %(ran)b::int[]) AS v (seq, token, delay, error, ran)
WHERE m.seq = v.seq AND m.lease_token = v.token
RETURNING m.seq
"""

_DEAD_LETTER = f"""
WITH gone AS (
    DELETE FROM SQ.messages m
    USING unnest(%(seqs)b::bigint[], %(tokens)b::text[], %(request_ids)b::text[],
        %(reasons)b::text[], %(details)b::text[]) AS v (seq, token, request_id, reason, detail)
    WHERE m.seq = v.seq AND m.lease_token = v.token
    RETURNING m.seq, m.body, m.attributes, m.published_at, m.attempts, m.replays, v.request_id,
        v.reason, v.detail
)
INSERT INTO SQ.dead_letters AS d ({DLQ_COLUMNS})
SELECT seq::text, request_id, reason, detail, attempts, body, attributes, published_at,
    {DB_NOW}, replays FROM gone ORDER BY seq
ON CONFLICT (message_id) DO UPDATE SET request_id = excluded.request_id,
    reason = excluded.reason, detail = excluded.detail, attempts = excluded.attempts,
    payload = excluded.payload, attributes = excluded.attributes,
    published_at = excluded.published_at, dead_lettered_at = excluded.dead_lettered_at,
    replays = excluded.replays
RETURNING message_id
"""


def _seq(message_id: str) -> int | None:
    try:
        return int(message_id)
    except ValueError:
        return None


def _vacuum_hot_tables(db: PostgresDatabase) -> None:
    """VACUUM (and ANALYZE) the queue's hot tables on a connection of its own."""
    psycopg = import_driver()
    try:
        with psycopg.connect(db.url.conninfo, autocommit=True) as conn:
            # SKIP_LOCKED: another worker's vacuum of the same table is enough
            conn.execute(db.sql("VACUUM (SKIP_LOCKED, ANALYZE) SQ.messages, SQ.request_claims"))
    except Exception:  # upkeep only: the next round tries again
        return


class PostgresQueue(Queue):
    """The queue contract on a PostgreSQL schema; see the module docstring."""

    scheme = "postgresql"
    pull_batch = 100  # the worker's batch when it is not told one

    def __init__(
        self,
        db: PostgresDatabase,
        *,
        clock: Callable[[], float] | None = None,
        owns_db: bool = False,
    ) -> None:
        self.db = db
        # None: the database's clock for every lease and delay (the production case)
        self.clock = clock
        self._owns_db = owns_db
        self._store = PostgresStore(db)
        self._listener: psycopg.Connection[Any] | None = None
        self._listen_lock = threading.Lock()
        self._settled_since_vacuum = 0
        self._vacuum: threading.Thread | None = None

    @classmethod
    def from_url(
        cls, url: str, *, clock: Callable[[], float] | None = None, read_only: bool = False
    ) -> PostgresQueue:
        return cls(PostgresDatabase(url, read_only=read_only), clock=clock, owns_db=True)

    @property
    def colocated_store(self) -> PostgresStore:
        return self._store

    def _now(self) -> float | None:
        """The injected clock's time, or None: the database's (see ``DB_NOW``)."""
        return None if self.clock is None else self.clock()

    def _local(self) -> float:
        return time.time() if self.clock is None else self.clock()

    # -- publish ------------------------------------------------------------------------

    def publish(self, body: bytes, attributes: Attributes | None = None) -> str:
        return self.publish_batch([(body, attributes)])[0]

    def publish_batch(self, items: Iterable[tuple[bytes, Attributes | None]]) -> list[str]:
        bodies: list[bytes] = []
        attrs: list[str | None] = []
        for body, attributes in items:
            checked = check_publish_args(body, attributes)
            bodies.append(bytes(body))
            attrs.append(attrs_text(checked))
        if not bodies:
            return []
        return self._insert(bodies, attrs, [0] * len(bodies))

    def _insert(
        self,
        bodies: list[bytes],
        attrs: list[str | None],
        replays: list[int],
        conn: psycopg.Connection[Any] | None = None,
    ) -> list[str]:
        params = {"bodies": bodies, "attrs": attrs, "replays": replays, "now": self._now()}
        if conn is None:
            with self.db.transaction() as own:
                return self._insert(bodies, attrs, replays, own)
        rows = conn.execute(self.db.sql(_PUBLISH), params).fetchall()
        if self.db.url.notify:
            # delivered at COMMIT, to every session listening on this schema's channel
            conn.execute("SELECT pg_notify(%s, '')", (self.db.url.channel,))
        return [str(r[0]) for r in rows]

    # -- pull -----------------------------------------------------------------------------

    def pull(self, max_messages: int, lease_s: float) -> list[Delivery]:
        check_pull_args(max_messages, lease_s)
        token = secrets.token_hex(8)
        until = self._local() + lease_s  # on the caller's clock, from before the request
        params = {"token": token, "lease": float(lease_s), "n": max_messages, "now": self._now()}
        with self.db.transaction() as conn:
            with conn.pipeline():  # one round trip for both statements and the COMMIT
                conn.execute(_INDEX_ONLY)
                # binary results: the bodies come as bytes, not hex text to decode
                cur = conn.execute(self.db.sql(_PULL), params, binary=True)
                conn.commit()
            rows = cur.fetchall()
        return deliveries_of(rows, token, until)

    def wait_for_messages(self, timeout_s: float) -> bool | None:
        """Block until a publish on this queue's schema is announced, or ``timeout_s``
        passes; True when woken by a publish.

        For an idle worker between empty pulls: it starts at once when work arrives
        instead of at its next poll. A publish that came after the last empty pull
        and before this call is not missed once the first call has subscribed (the
        notification waits in the connection). With ``?notify=off``, or while the
        listening connection cannot be had, this sleeps ``timeout_s`` (polling).
        Never raises for a database failure: the next pull reports it.
        """
        if timeout_s <= 0:
            return False
        if not self.db.url.notify:
            time.sleep(timeout_s)
            return False
        end = time.monotonic() + timeout_s
        with self._listen_lock:
            try:
                conn = self._listen()
                for _ in conn.notifies(timeout=max(0.0, end - time.monotonic()), stop_after=1):
                    return True
                return False
            except Exception:
                self._drop_listener()
        time.sleep(max(0.0, end - time.monotonic()))
        return False

    def _listen(self) -> psycopg.Connection[Any]:
        if self._listener is None or self._listener.closed:
            psycopg = import_driver()
            from psycopg import sql

            conn = psycopg.connect(self.db.url.conninfo, autocommit=True)
            conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self.db.url.channel)))
            self._listener = conn
        return self._listener

    def _drop_listener(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            with contextlib.suppress(Exception):
                listener.close()

    # -- settle -------------------------------------------------------------------------

    def settle(
        self, settlements: Sequence[Settlement], *, events: Sequence[Event] = ()
    ) -> SettleResult:
        """Settle, and write ``events`` (whatever happens to the settlements) and the
        events of the applied settlements, all in one transaction."""
        if not settlements:
            if events:
                self._store.write(events)
            return SettleResult()
        acks = sorted(
            (int(s.delivery.message_id), s.delivery.lease_token)
            for s in settlements
            if s.action == "ack" and _seq(s.delivery.message_id) is not None
        )
        nacks = sorted(
            (
                int(s.delivery.message_id),
                s.delivery.lease_token,
                max(0.0, float(s.delay_s)),
                None if s.detail is None else clean_text(s.detail),
                int(s.ran),
            )
            for s in settlements
            if s.action == "nack" and _seq(s.delivery.message_id) is not None
        )
        letters = sorted(
            (
                int(s.delivery.message_id),
                s.delivery.lease_token,
                None if s.request_id is None else clean_text(s.request_id),
                clean_text(s.reason or "unspecified"),
                clean_text(s.detail or ""),
            )
            for s in settlements
            if s.action == "dead_letter" and _seq(s.delivery.message_id) is not None
        )
        now = self._now()
        # (statement, parameters, the lease token each row was settled under)
        work: list[tuple[str, Any, dict[int, str]]] = []
        if acks:
            work.append(
                (_ACK, ([r[0] for r in acks], [r[1] for r in acks]), {r[0]: r[1] for r in acks})
            )
        if nacks:
            params = {
                "seqs": [r[0] for r in nacks],
                "tokens": [r[1] for r in nacks],
                "delays": [r[2] for r in nacks],
                "errors": [r[3] for r in nacks],
                "ran": [r[4] for r in nacks],
                "now": now,
            }
            work.append((_NACK, params, {r[0]: r[1] for r in nacks}))
        if letters:
            params = {
                "seqs": [r[0] for r in letters],
                "tokens": [r[1] for r in letters],
                "request_ids": [r[2] for r in letters],
                "reasons": [r[3] for r in letters],
                "details": [r[4] for r in letters],
                "now": now,
            }
            work.append((_DEAD_LETTER, params, {r[0]: r[1] for r in letters}))
        done: set[tuple[str, str]] = set()  # (message id, lease token) applied
        # the ledger rows these settlements may move, read and locked in the same round
        # trip as the settlements (after them: rows are locked messages first, then
        # requests, in key order, as every writer does); a settlement found lost leaves
        # its request's row locked until the commit, and unchanged
        maybe = ledger_ids([*events, *(e for s in settlements for e in s.events)])
        with self.db.transaction() as conn:
            with conn.pipeline():  # one round trip; the statements run in this order
                ran = [(conn.execute(self.db.sql(sql), p), tokens) for sql, p, tokens in work]
                if maybe:
                    locked = conn.cursor()
                    lock_requests(self.db, locked, maybe)
            for cur, tokens in ran:
                done.update((str(r[0]), tokens[int(r[0])]) for r in cur.fetchall())
            stored = stored_rows(locked, maybe) if maybe else {}
            applied: list[Settlement] = []
            lost: list[Settlement] = []
            written: list[Event] = list(events)
            for item in settlements:
                key = (item.delivery.message_id, item.delivery.lease_token)
                if key in done:
                    applied.append(item)
                    written.extend(item.events)
                else:
                    lost.append(item)
            # the inserts and the COMMIT in one round trip
            write_events(self.db, conn, written, stored=stored, commit=True)
        self._note_settled(sum(1 for item in applied if item.action != "nack"))
        return SettleResult(tuple(applied), tuple(lost))

    def _note_settled(self, rows: int) -> None:
        """Count rows that left the hot tables; every ``vacuum_every`` of them, vacuum
        those tables in the background. Deleted rows stay as dead tuples until a VACUUM,
        and with autovacuum off (this machine's server) nothing else would run one."""
        every = self.db.url.vacuum_every
        if every <= 0 or self.db.read_only:
            return
        self._settled_since_vacuum += rows
        running = self._vacuum is not None and self._vacuum.is_alive()
        if self._settled_since_vacuum >= every and not running:
            self._settled_since_vacuum = 0
            self._vacuum = threading.Thread(
                target=_vacuum_hot_tables, args=(self.db,), name="steadyq-vacuum", daemon=True
            )
            self._vacuum.start()

    def extend(self, delivery: Delivery, lease_s: float) -> Delivery:
        check_pull_args(1, lease_s)
        until = self._local() + lease_s
        seq = _seq(delivery.message_id)
        with self.db.transaction() as conn:
            cur = conn.execute(
                self.db.sql(
                    f"UPDATE SQ.messages SET visible_at = {DB_NOW} + %(lease)s"
                    " WHERE seq = %(seq)s AND lease_token = %(token)s"
                ),
                {
                    "lease": float(lease_s),
                    "seq": seq,
                    "token": delivery.lease_token,
                    "now": self._now(),
                },
            )
            if cur.rowcount != 1:
                raise LeaseLost(f"message {delivery.message_id} was leased again")
        return replace(delivery, leased_until=until)

    # -- looking ------------------------------------------------------------------------

    def stats(self) -> QueueStats:
        with self.db.reading() as conn:
            row = conn.execute(
                self.db.sql(
                    f"SELECT {DB_NOW} AS t, * FROM (SELECT"
                    f" count(*) FILTER (WHERE visible_at <= {DB_NOW}),"
                    f" count(*) FILTER (WHERE visible_at > {DB_NOW} AND lease_token IS NOT NULL),"
                    f" count(*) FILTER (WHERE visible_at > {DB_NOW} AND lease_token IS NULL),"
                    " min(published_at) FROM SQ.messages) AS s,"
                    " (SELECT count(*) FROM SQ.dead_letters) AS d"
                ),
                {"now": self._now()},
            ).fetchone()
        assert row is not None
        now, ready, in_flight, delayed, oldest, dead = row
        return QueueStats(
            ready=ready,
            in_flight=in_flight,
            delayed=delayed,
            dead_lettered=dead,
            oldest_unacked_age_s=None if oldest is None else max(0.0, now - oldest),
        )

    def dlq_list(self, where: DlqFilter | None = None) -> list[DeadLetter]:
        sql, params = dlq_where(POSTGRES, where or DlqFilter())
        with self.db.reading() as conn:
            rows = conn.execute(
                self.db.sql(f"SELECT {DLQ_COLUMNS} FROM SQ.dead_letters{sql}"), params
            )
            return [letter_of(r) for r in rows]

    def dlq_get(self, message_id: str) -> DeadLetter:
        with self.db.reading() as conn:
            row = conn.execute(
                self.db.sql(f"SELECT {DLQ_COLUMNS} FROM SQ.dead_letters WHERE message_id = %s"),
                (message_id,),
            ).fetchone()
        if row is None:
            raise NotFound(f"no dead letter with message id {message_id!r}")
        return letter_of(row)

    def dlq_replay(
        self, where: DlqFilter, *, max_replays: int = 3, dry_run: bool = False
    ) -> list[tuple[DeadLetter, str | None]]:
        sql, params = dlq_where(POSTGRES, where)
        out: list[tuple[DeadLetter, str | None]] = []
        with self.db.transaction() as conn:
            # the letters stay locked until the replay commits: two replays of the same
            # letters cannot both publish them
            letters = [
                letter_of(r)
                for r in conn.execute(
                    self.db.sql(f"SELECT {DLQ_COLUMNS} FROM SQ.dead_letters{sql} FOR UPDATE"),
                    params,
                )
            ]
            go = [x for x in letters if not dry_run and x.replays < max_replays]
            new_ids = iter(
                self._insert(
                    [x.payload for x in go],
                    [attrs_text(dict(x.attributes)) for x in go],
                    [x.replays + 1 for x in go],
                    conn,
                )
                if go
                else []
            )
            if go:
                conn.execute(
                    self.db.sql("DELETE FROM SQ.dead_letters WHERE message_id = ANY(%b)"),
                    ([x.message_id for x in go],),
                )
            chosen = {x.message_id for x in go}
            for letter in letters:
                out.append((letter, next(new_ids) if letter.message_id in chosen else None))
        return out

    def dlq_purge(self, where: DlqFilter) -> int:
        sql, params = dlq_where(POSTGRES, where)
        with self.db.transaction() as conn:
            cur = conn.execute(
                self.db.sql(
                    "DELETE FROM SQ.dead_letters WHERE message_id IN"
                    f" (SELECT message_id FROM SQ.dead_letters{sql})"
                ),
                params,
            )
            return cur.rowcount

    def dlq_expire(self, older_than_s: float, now: float | None = None) -> int:
        from steadyq.brokers.base import dlq_cut

        if dlq_cut(older_than_s, 0.0 if now is None else now) is None:
            return 0  # 0 keeps them forever
        with self.db.transaction() as conn:  # through the dead_letters_at index
            cur = conn.execute(
                self.db.sql(
                    f"DELETE FROM SQ.dead_letters WHERE dead_lettered_at < {DB_NOW} - %(age)s"
                ),
                {"now": now if now is not None else self._now(), "age": older_than_s},
            )
            return cur.rowcount

    def close(self) -> None:
        with self._listen_lock:
            self._drop_listener()
        if self._vacuum is not None:
            self._vacuum.join(30)
        if self._owns_db:
            self.db.close()


__all__ = ["PostgresQueue", "driver_error"]
