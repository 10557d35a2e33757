"""The embedded queue: one SQLite file, safe for several worker processes on one host.

Visibility is one column, ``visible_at``: a message is ready when
``visible_at <= now``. A pull sets it to the lease's end (and stamps a lease
token), a nack to ``now + delay`` (and clears the token). So an expired lease
needs no sweeper: the message is simply ready again, and its next pull raises the
attempt count as any pull does.
"""

from __future__ import annotations

import secrets
import sqlite3
import time
from collections.abc import Callable, Iterable, Sequence

from steadyq._sql import (
    DLQ_COLUMNS,
    SQLITE,
    attrs_text,
    deliveries_of,
    dlq_where,
    letter_of,
)
from steadyq._sqlite import SqliteDatabase, busy_timeout_ms, max_page_count, sqlite_path
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
from steadyq.telemetry.store_sqlite import SqliteStore, write_events


class SqliteQueue(Queue):
    """The queue contract on a SQLite file; see the module docstring for the design."""

    scheme = "sqlite"

    def __init__(
        self,
        db: SqliteDatabase,
        *,
        clock: Callable[[], float] = time.time,
        owns_db: bool = False,
    ) -> None:
        self.db = db
        self.clock = clock
        self._owns_db = owns_db
        self._store = SqliteStore(db)

    @classmethod
    def from_url(
        cls, url: str, *, clock: Callable[[], float] = time.time, read_only: bool = False
    ) -> SqliteQueue:
        db = SqliteDatabase(
            sqlite_path(url), busy_timeout_ms=busy_timeout_ms(url), read_only=read_only
        )
        pages = max_page_count(url)
        if pages is not None and not read_only:
            db.limit_pages(pages)
        return cls(db, clock=clock, owns_db=True)

    @property
    def colocated_store(self) -> SqliteStore:
        return self._store

    def publish(self, body: bytes, attributes: Attributes | None = None) -> str:
        return self.publish_batch([(body, attributes)])[0]

    def publish_batch(self, items: Iterable[tuple[bytes, Attributes | None]]) -> list[str]:
        rows = []
        for body, attributes in items:
            attrs = check_publish_args(body, attributes)
            rows.append((bytes(body), attrs_text(attrs)))
        now = self.clock()
        ids: list[str] = []
        with self.db.transaction() as conn:
            for body_bytes, attrs_json in rows:
                cur = conn.execute(
                    "INSERT INTO messages (body, attributes, published_at, visible_at)"
                    " VALUES (?, ?, ?, ?)",
                    (body_bytes, attrs_json, now, now),
                )
                ids.append(str(cur.lastrowid))
        return ids

    def pull(self, max_messages: int, lease_s: float) -> list[Delivery]:
        check_pull_args(max_messages, lease_s)
        now = self.clock()
        token = secrets.token_hex(8)
        until = now + lease_s
        with self.db.transaction() as conn:
            rows = conn.execute(
                "UPDATE messages SET attempts = attempts + 1, lease_token = ?, visible_at = ?"
                " WHERE seq IN (SELECT seq FROM messages WHERE visible_at <= ?"
                " ORDER BY visible_at LIMIT ?)"
                " RETURNING seq, body, attributes, attempts, published_at, replays, last_error,"
                " runs",
                (token, until, now, max_messages),
            ).fetchall()
        return deliveries_of(rows, token, until)

    def settle(
        self, settlements: Sequence[Settlement], *, events: Sequence[Event] = ()
    ) -> SettleResult:
        """Settle, and write ``events`` (whatever happens to the settlements) and the
        events of the applied settlements, all in one transaction."""
        if not settlements:
            if events:
                self._store.write(events)
            return SettleResult()
        now = self.clock()
        with self.db.transaction() as conn:
            return self._settle_in(conn, settlements, events, now)

    def _settle_in(
        self,
        conn: sqlite3.Connection,
        settlements: Sequence[Settlement],
        events: Sequence[Event],
        now: float,
    ) -> SettleResult:
        applied: list[Settlement] = []
        lost: list[Settlement] = []
        written: list[Event] = list(events)
        acked = self._ack_all(conn, [s for s in settlements if s.action == "ack"])
        for item in settlements:
            if item.action == "ack":
                done = int(item.delivery.message_id) in acked
            else:
                done = self._apply(conn, item, now)
            if done:
                applied.append(item)
                written.extend(item.events)
            else:
                lost.append(item)
        write_events(conn, written)
        return SettleResult(tuple(applied), tuple(lost))

    @staticmethod
    def _ack_all(conn: sqlite3.Connection, acks: list[Settlement]) -> set[int]:
        """Delete acked messages with one statement per lease token (a pull shares one)."""
        by_token: dict[str, list[int]] = {}
        for item in acks:
            by_token.setdefault(item.delivery.lease_token, []).append(int(item.delivery.message_id))
        acked: set[int] = set()
        for token, seqs in by_token.items():
            for start in range(0, len(seqs), 500):
                chunk = seqs[start : start + 500]
                rows = conn.execute(
                    "DELETE FROM messages WHERE lease_token = ? AND seq IN"
                    f" ({','.join('?' * len(chunk))}) RETURNING seq",
                    [token, *chunk],
                )
                acked.update(r[0] for r in rows)
        return acked

    def _apply(self, conn: sqlite3.Connection, item: Settlement, now: float) -> bool:
        d = item.delivery
        key = (int(d.message_id), d.lease_token)
        if item.action == "nack":
            cur = conn.execute(
                "UPDATE messages SET lease_token = NULL, visible_at = ?,"
                " last_error = COALESCE(?, last_error), runs = runs + ?"
                " WHERE seq = ? AND lease_token = ?",
                (now + max(0.0, item.delay_s), item.detail, int(item.ran), *key),
            )
            return cur.rowcount == 1
        row = conn.execute(
            "DELETE FROM messages WHERE seq = ? AND lease_token = ?"
            " RETURNING body, attributes, published_at, attempts, replays",
            key,
        ).fetchone()
        if row is None:
            return False
        conn.execute(
            f"INSERT OR REPLACE INTO dead_letters ({DLQ_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?)",
            (
                d.message_id,
                item.request_id,
                item.reason or "unspecified",
                item.detail or "",
                row[3],
                row[0],
                row[1],
                row[2],
                now,
                row[4],
            ),
        )
        return True

    def extend(self, delivery: Delivery, lease_s: float) -> Delivery:
        check_pull_args(1, lease_s)
        until = self.clock() + lease_s
        with self.db.transaction() as conn:
            cur = conn.execute(
                "UPDATE messages SET visible_at = ? WHERE seq = ? AND lease_token = ?",
                (until, int(delivery.message_id), delivery.lease_token),
            )
            if cur.rowcount != 1:
                raise LeaseLost(f"message {delivery.message_id} was leased again")
        return _replace_lease(delivery, until)

    def stats(self) -> QueueStats:
        now = self.clock()
        with self.db.reading() as conn:
            ready, in_flight, delayed, oldest = conn.execute(
                "SELECT COALESCE(SUM(visible_at <= ?), 0),"
                " COALESCE(SUM(visible_at > ? AND lease_token IS NOT NULL), 0),"
                " COALESCE(SUM(visible_at > ? AND lease_token IS NULL), 0),"
                " MIN(published_at) FROM messages",
                (now, now, now),
            ).fetchone()
            (dead,) = conn.execute("SELECT COUNT(*) FROM dead_letters").fetchone()
        return QueueStats(
            ready=ready,
            in_flight=in_flight,
            delayed=delayed,
            dead_lettered=dead,
            oldest_unacked_age_s=None if oldest is None else max(0.0, now - oldest),
        )

    def dlq_list(self, where: DlqFilter | None = None) -> list[DeadLetter]:
        sql, params = dlq_where(SQLITE, where or DlqFilter())
        with self.db.reading() as conn:
            rows = conn.execute(f"SELECT {DLQ_COLUMNS} FROM dead_letters{sql}", params)
            return [letter_of(r) for r in rows]

    def dlq_get(self, message_id: str) -> DeadLetter:
        with self.db.reading() as conn:
            row = conn.execute(
                f"SELECT {DLQ_COLUMNS} FROM dead_letters WHERE message_id = ?", (message_id,)
            ).fetchone()
        if row is None:
            raise NotFound(f"no dead letter with message id {message_id!r}")
        return letter_of(row)

    def dlq_replay(
        self, where: DlqFilter, *, max_replays: int = 3, dry_run: bool = False
    ) -> list[tuple[DeadLetter, str | None]]:
        sql, params = dlq_where(SQLITE, where)
        now = self.clock()
        out: list[tuple[DeadLetter, str | None]] = []
        with self.db.transaction() as conn:
            letters = [
                letter_of(r)
                for r in conn.execute(f"SELECT {DLQ_COLUMNS} FROM dead_letters{sql}", params)
            ]
            for letter in letters:
                if dry_run or letter.replays >= max_replays:
                    out.append((letter, None))
                    continue
                cur = conn.execute(
                    "INSERT INTO messages (body, attributes, published_at, visible_at, replays)"
                    " VALUES (?, ?, ?, ?, ?)",
                    (
                        letter.payload,
                        attrs_text(dict(letter.attributes)),
                        now,
                        now,
                        letter.replays + 1,
                    ),
                )
                conn.execute("DELETE FROM dead_letters WHERE message_id = ?", (letter.message_id,))
                out.append((letter, str(cur.lastrowid)))
        return out

    def dlq_purge(self, where: DlqFilter) -> int:
        sql, params = dlq_where(
            SQLITE, DlqFilter(where.reason, where.since, where.before, where.message_ids)
        )
        with self.db.transaction() as conn:
            if where.limit is None:
                cur = conn.execute(
                    "DELETE FROM dead_letters WHERE message_id IN"
                    f" (SELECT message_id FROM dead_letters{sql})",
                    params,
                )
            else:
                cur = conn.execute(
                    "DELETE FROM dead_letters WHERE message_id IN"
                    f" (SELECT message_id FROM dead_letters{sql} LIMIT ?)",
                    [*params, where.limit],
                )
            return cur.rowcount

    def close(self) -> None:
        if self._owns_db:
            self.db.close()

    # added by the store engineer (retention, issue 14 item 7): additive only
    def dlq_expire(self, older_than_s: float, now: float | None = None) -> int:
        from steadyq.brokers.base import dlq_cut

        cut = dlq_cut(older_than_s, self.clock() if now is None else now)
        if cut is None:
            return 0
        with self.db.transaction() as conn:  # through the dead_letters_at index
            sql = "DELETE FROM dead_letters WHERE dead_lettered_at < ?"
            return conn.execute(sql, (cut,)).rowcount


def _replace_lease(delivery: Delivery, until: float) -> Delivery:
    from dataclasses import replace

    return replace(delivery, leased_until=until)
