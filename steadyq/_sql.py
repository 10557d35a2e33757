"""What the two SQL backends (SQLite, PostgreSQL) say alike, written once.

The tables have the same columns on both (``_sqlite.py``, ``_postgres.py``); what
differs is the parameter mark (``?`` or ``%s``), how a list is matched (``IN (?, …)``
or ``= ANY(%s)``) and where the tables live (PostgreSQL's ``SQ.`` schema token). A
:class:`Dialect` says that much, and the filters of the listings (events, ledger rows,
dead letters) and the row decoding of dead letters are built from it here.

The other way, for statements that are simpler written once in SQLite's spelling (the
watch's state, the dashboard, the store's metrics): :class:`PgStatements` spells them
for PostgreSQL as they run, and :func:`sqlite_spelled` opens a read that takes them on
either backend. :class:`Holes` is what a reader that goes by event id must keep on
PostgreSQL, where ids do not commit in order.
"""

from __future__ import annotations

import functools
import json
import re
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from steadyq.telemetry import events as ev
from steadyq.telemetry.events import SEVERITY_RANK, severity_rank

if TYPE_CHECKING:
    from steadyq._postgres import PostgresDatabase
    from steadyq._sqlite import SqliteDatabase
    from steadyq.brokers.base import DeadLetter, Delivery, DlqFilter
    from steadyq.telemetry.store import EventFilter


@dataclass(frozen=True, slots=True)
class Dialect:
    """How one SQL backend writes a parameter, a list match and a table name."""

    mark: str  # one parameter
    prefix: str  # before a table name
    array: bool  # a list is one parameter (= ANY), else one mark per item (IN)

    def any_of(self, column: str, values: Sequence[Any]) -> tuple[str, list[Any]]:
        """``column`` is one of ``values`` (none: false), and its parameters."""
        if self.array:
            return f"{column} = ANY({self.mark})", [list(values)]
        if not values:
            return "0", []
        return f"{column} IN ({','.join([self.mark] * len(values))})", list(values)


# WARNING and above: the condition of both backends' partial index on events, and of
# the watch's and the dashboard's queries that must use it (one constant)
WARNINGS_ONLY = f"sev_rank >= {SEVERITY_RANK['WARNING']}"
# the outcomes that end a message's life (store.FINAL_OUTCOME_KINDS), for the partial
# index that answers "is this redelivered message's outcome recorded?"
OUTCOME_KINDS_SQL = "kind IN ({})".format(
    ", ".join(
        f"'{kind}'"
        for kind in (
            ev.MESSAGE_SUCCEEDED,
            ev.MESSAGE_DUPLICATE,
            ev.MESSAGE_REJECTED,
            ev.MESSAGE_DEAD_LETTERED,
        )
    )
)

SQLITE = Dialect(mark="?", prefix="", array=False)
POSTGRES = Dialect(mark="%s", prefix="SQ.", array=True)


def _where(clauses: list[str]) -> str:
    return (" WHERE " + " AND ".join(clauses)) if clauses else ""


def _compare(
    d: Dialect, tests: Sequence[tuple[str, Any, str]], clauses: list[str], params: list[Any]
) -> None:
    """Add ``column op ?`` for each (column, value, op) whose value is set."""
    for column, value, op in tests:
        if value is not None:
            clauses.append(f"{column} {op} {d.mark}")
            params.append(value)


def events_query(d: Dialect, columns: str, where: EventFilter) -> tuple[str, list[Any]]:
    """The SELECT of the events ``where`` picks (oldest first unless newest_first)."""
    clauses: list[str] = []
    params: list[Any] = []
    if where.kinds is not None:
        clause, values = d.any_of("kind", where.kinds)
        clauses.append(clause)
        params += values
    tests = (
        ("ts", where.since, ">="),
        ("ts", where.until, "<"),
        ("execution_id", where.execution_id, "="),
        ("message_id", where.message_id, "="),
        ("request_id", where.request_id, "="),
    )
    _compare(d, tests, clauses, params)
    if where.min_severity is not None:
        clauses.append(f"sev_rank >= {d.mark}")
        params.append(severity_rank(where.min_severity))
    sql = f"SELECT {columns} FROM {d.prefix}events" + _where(clauses)
    sql += " ORDER BY ts DESC, id DESC" if where.newest_first else " ORDER BY ts, id"
    if where.limit is not None:
        sql += f" LIMIT {d.mark}"
        params.append(where.limit)
    return sql, params


def requests_query(
    d: Dialect,
    columns: str,
    *,
    status: str | None,
    request_id: str | None,
    since: float | None,
    limit: int | None,
) -> tuple[str, list[Any]]:
    """The SELECT of ledger rows, most recently updated first."""
    clauses: list[str] = []
    params: list[Any] = []
    tests = (("status", status, "="), ("request_id", request_id, "="), ("updated_at", since, ">="))
    _compare(d, tests, clauses, params)
    sql = f"SELECT {columns} FROM {d.prefix}requests" + _where(clauses)
    sql += " ORDER BY updated_at DESC, request_id"
    if limit is not None:
        sql += f" LIMIT {d.mark}"
        params.append(limit)
    return sql, params


# -- dead letters -----------------------------------------------------------------

DLQ_COLUMNS = (
    "message_id, request_id, reason, detail, attempts, payload, attributes, published_at,"
    " dead_lettered_at, replays"
)


def dlq_conditions(d: Dialect, where: DlqFilter) -> tuple[str, list[Any]]:
    """The ``WHERE`` clause (or nothing) of the dead letters ``where`` selects, and its
    parameters; its ``limit`` is not applied."""
    clauses: list[str] = []
    params: list[Any] = []
    tests = (
        ("reason", where.reason, "="),
        ("dead_lettered_at", where.since, ">="),
        ("dead_lettered_at", where.before, "<"),
    )
    _compare(d, tests, clauses, params)
    if where.message_ids is not None:
        clause, values = d.any_of("message_id", where.message_ids)
        clauses.append(clause)
        params += values
    return _where(clauses), params


def dlq_where(d: Dialect, where: DlqFilter, *, limit: bool = True) -> tuple[str, list[Any]]:
    """``dlq_conditions`` in the listing's order, with ``where.limit`` unless not ``limit``."""
    sql, params = dlq_conditions(d, where)
    sql += " ORDER BY dead_lettered_at, message_id"
    if limit and where.limit is not None:
        sql += f" LIMIT {d.mark}"
        params.append(where.limit)
    return sql, params


def attrs_text(attrs: dict[str, str]) -> str | None:
    """Message attributes as stored: compact JSON, or NULL for none."""
    return json.dumps(attrs, separators=(",", ":")) if attrs else None


def attrs_of(text: str | None) -> dict[str, str]:
    return json.loads(text) if text else {}


def deliveries_of(rows: list[Sequence[Any]], token: str, until: float) -> list[Delivery]:
    """The deliveries of a pull's leased rows (``seq, body, attributes, attempts,
    published_at, replays, last_error, runs``), in publish order: the SQL queues' pull."""
    from steadyq.brokers.base import Delivery

    rows.sort(key=lambda r: r[0])
    return [
        Delivery(
            message_id=str(r[0]),
            body=bytes(r[1]),
            attributes=attrs_of(r[2]),
            attempt=r[3],
            published_at=r[4],
            lease_token=token,
            leased_until=until,
            replays=r[5],
            last_error=r[6],
            runs=r[7],
        )
        for r in rows
    ]


def letter_of(row: Sequence[Any]) -> DeadLetter:
    """A dead letter from a row of :data:`DLQ_COLUMNS`."""
    from steadyq.brokers.base import DeadLetter

    return DeadLetter(
        message_id=str(row[0]),
        request_id=row[1],
        reason=row[2],
        detail=row[3],
        attempts=row[4],
        payload=bytes(row[5]),
        attributes=attrs_of(row[6]),
        published_at=row[7],
        dead_lettered_at=row[8],
        replays=row[9],
    )


# -- statements written once, in SQLite's spelling ---------------------------------

# the tables a statement in SQLite's spelling may name bare (the store's, the dead
# letters, the watch's state), and nothing longer that starts like one (an index
# name such as events_kind_ts) nor a name already qualified
_TABLES = re.compile(
    r"(?<![.\w])(events|executions|requests|dead_letters"
    r"|watch_(?:runs|owners|checkpoints|alerts))\b"
)
# SQLite's planner hint; PostgreSQL has none (its planner picks the index itself)
_INDEXED_BY = re.compile(r"\s+INDEXED BY \w+")


@functools.lru_cache(maxsize=512)
def postgres_spelling(sql: str) -> str:
    """A statement written for SQLite, spelled for PostgreSQL: ``?`` placeholders
    become ``%s`` (a literal ``%`` is doubled), the tables are in the ``SQ.`` schema
    and ``INDEXED BY`` hints are dropped. Such a statement must hold no literal ``?``
    (pass the text as a parameter)."""
    sql = _INDEXED_BY.sub("", sql)
    return _TABLES.sub(r"SQ.\1", sql).replace("%", "%%").replace("?", "%s")


class PgStatements:
    """A PostgreSQL connection that takes statements as written for SQLite
    (:func:`postgres_spelling`), with the tables in ``db``'s schema."""

    def __init__(self, conn: Any, db: PostgresDatabase) -> None:
        self._conn = conn
        self._db = db

    def execute(self, sql: str, parameters: Sequence[Any] = ()) -> Any:
        return self._conn.execute(self._db.sql(postgres_spelling(sql)), parameters)


def is_sqlite(db: SqliteDatabase | PostgresDatabase) -> bool:
    # by the class's dialect: importing the class here would close an import circle
    return db.dialect is SQLITE


@contextmanager
def sqlite_spelled(
    db: SqliteDatabase | PostgresDatabase, *, snapshot: bool = False
) -> Iterator[Any]:
    """A read on ``db`` whose connection takes statements in SQLite's spelling: the
    SQLite connection itself, or a :class:`PgStatements` over a pooled PostgreSQL one.
    ``snapshot``: on PostgreSQL, every statement of the block sees the same state
    (REPEATABLE READ; each statement takes its own at READ COMMITTED).

    Raises:
        BackendError: the database failed (also while the caller reads a cursor).
    """
    with db.reading() as conn:
        if is_sqlite(db):
            yield conn
            return
        if snapshot:
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        yield PgStatements(conn, db)  # type: ignore[arg-type]


def id_marks(ids: Sequence[int]) -> str:
    """``?, ?, …``: one placeholder per id, for ``id IN (…)`` in SQLite's spelling."""
    return ",".join("?" * len(ids))


class Holes:
    """Event ids a reader that goes by id passed over, and that may still appear.

    PostgreSQL gives a row its identity id when the row is inserted, and transactions
    commit in any order: a reader that has seen id 101 can see 100 appear later. Such
    a reader (the live feed, the store's metrics) records every id it skipped (a hole)
    and looks for it again at each read until :attr:`settle_s` has passed: no steadyq
    write transaction lasts that long (the server ends a session idle inside a
    transaction after the URL's ``idle_in_transaction_s``, 30 s by default). A gap
    wider than :attr:`widest` ids (a bulk insert rolled back, rows pruned) is taken as
    final, and at most :attr:`most` holes are kept (the newest). On SQLite (one writer
    at a time: ids commit in order) ``tracked`` is False and nothing is recorded.
    """

    def __init__(
        self,
        tracked: bool,
        *,
        settle_s: float = 60.0,
        widest: int = 10_000,
        most: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.tracked = tracked
        self.settle_s = settle_s
        self.widest = widest
        self.most = most
        self._clock = clock
        self._since: dict[int, float] = {}  # hole -> when first passed over (insertion order)

    def passed(self, after: int, ids: Iterable[int], upto: int | None = None) -> None:
        """The ids (ascending) a read found after id ``after``; a read of the whole
        range up to ``upto`` also leaves the ids above the last one found as holes."""
        if not self.tracked:
            return
        now = self._clock()
        previous = after
        for current in (*ids, *(() if upto is None else (upto + 1,))):
            if 1 < current - previous <= self.widest + 1:
                for hole in range(previous + 1, current):
                    self._since.setdefault(hole, now)
            previous = max(previous, current)
        while len(self._since) > self.most:
            del self._since[next(iter(self._since))]

    def pending(self) -> list[int]:
        """The holes still worth a look (the settled ones are forgotten), ascending."""
        cut = self._clock() - self.settle_s
        for hole in [h for h, at in self._since.items() if at < cut]:
            del self._since[hole]
        return sorted(self._since)

    def filled(self, ids: Iterable[int]) -> None:
        for found in ids:
            self._since.pop(found, None)

    def __len__(self) -> int:
        return len(self._since)
