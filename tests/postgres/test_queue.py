"""What only the PostgreSQL queue has: the database's clock, NOTIFY wake-ups, many
pullers at once, the schema opened by many workers at once, and driver errors."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from steadyq.brokers import open_queue
from steadyq.brokers.base import Settlement
from steadyq.brokers.postgres import PostgresQueue, driver_error
from steadyq.errors import BackendError, BackendUnavailable, ConfigError
from tests.postgres_db import BASE_URL

psycopg = pytest.importorskip("psycopg", reason="pip install -e .[postgres]")


def wait_until(check: object, timeout: float = 20.0, step: float = 0.1) -> None:
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(step)


@pytest.fixture
def q(pg_url: str) -> Iterator[PostgresQueue]:
    queue = open_queue(pg_url)
    assert isinstance(queue, PostgresQueue)
    yield queue
    queue.close()


def test_leases_and_delays_run_on_the_database_clock_not_the_hosts(
    q: PostgresQueue, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert q.clock is None, "open_queue's default clock means the database's"
    q.publish(b"x")
    [d] = q.pull(1, 1.0)
    real = time.time
    # this host's clock jumps an hour ahead: the lease it took does not lapse for that
    monkeypatch.setattr(time, "time", lambda: real() + 3600)
    assert q.pull(1, 1.0) == []
    wait_until(lambda: q.pull(1, 30), timeout=20)
    monkeypatch.setattr(time, "time", real)
    stats = q.stats()
    assert (stats.ready, stats.in_flight) == (0, 1)
    assert d.leased_until <= real() + 1.0


def test_nack_delay_and_dead_letter_times_are_the_databases(q: PostgresQueue) -> None:
    with q.db.reading() as conn:
        row = conn.execute("SELECT extract(epoch FROM clock_timestamp())::float8").fetchone()
    assert row is not None
    q.publish(b"x")
    [d] = q.pull(1, 30)
    q.nack(d, 1.5)
    assert q.pull(1, 30) == []
    assert q.stats().delayed == 1
    wait_until(lambda: q.stats().ready == 1)
    [d] = q.pull(1, 30)
    assert d.attempt == 2
    q.dead_letter(d, "why", "because")
    [letter] = q.dlq_list()
    assert abs(letter.dead_lettered_at - row[0]) < 60
    assert letter.published_at <= letter.dead_lettered_at


def test_publish_wakes_an_idle_puller_at_once(q: PostgresQueue, pg_url: str) -> None:
    assert q.wait_for_messages(0.05) is False, "nothing published: the wait times out"
    publisher = open_queue(pg_url)
    woke: list[float] = []

    def idle() -> None:
        started = time.monotonic()
        if q.wait_for_messages(30):
            woke.append(time.monotonic() - started)

    waiter = threading.Thread(target=idle)
    waiter.start()
    time.sleep(0.3)
    publisher.publish(b"wake up")
    waiter.join(40)
    publisher.close()
    assert woke and woke[0] < 10, "the publish did not wake the waiting puller"
    assert [d.body for d in q.pull(5, 30)] == [b"wake up"]


def test_notify_off_polls(pg_url: str) -> None:
    url = pg_url + "&notify=off"
    with open_queue(url) as quiet:
        assert isinstance(quiet, PostgresQueue) and not quiet.db.url.notify
        quiet.publish(b"x")
        started = time.monotonic()
        assert quiet.wait_for_messages(0.3) is False
        assert time.monotonic() - started >= 0.25
        assert len(quiet.pull(5, 30)) == 1


def test_many_pullers_never_share_a_message(pg_url: str) -> None:
    with open_queue(pg_url) as publisher:
        publisher.publish_batch([(str(i).encode(), None) for i in range(2000)])
    got: list[list[str]] = [[] for _ in range(4)]
    errors: list[BaseException] = []

    def puller(index: int) -> None:
        try:
            with open_queue(pg_url) as mine:
                while True:
                    batch = mine.pull(50, 60)
                    if not batch:
                        return
                    got[index].extend(d.message_id for d in batch)
                    mine.settle([Settlement.ack(d) for d in batch])
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=puller, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert errors == []
    every = [m for part in got for m in part]
    assert len(every) == 2000 and len(set(every)) == 2000
    assert sum(1 for part in got if part) >= 2, "the pullers shared the work"


def test_ten_workers_opening_a_new_schema_at_once_do_not_race(pg_url: str) -> None:
    opened: list[PostgresQueue] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def opener() -> None:
        try:
            queue = open_queue(pg_url)
            with lock:
                opened.append(queue)  # type: ignore[arg-type]
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=opener) for _ in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    try:
        assert errors == [] and len(opened) == 10
        opened[0].publish(b"x")
        assert len(opened[9].pull(1, 30)) == 1
    finally:
        for queue in opened:
            queue.close()


def test_a_schema_written_by_a_newer_steadyq_is_refused(q: PostgresQueue, pg_url: str) -> None:
    with q.db.transaction() as conn:
        conn.execute(
            q.db.sql("UPDATE SQ.steadyq_meta SET value = '99' WHERE key = 'schema_version'")
        )
    with pytest.raises(BackendUnavailable, match=r"newer steadyq \(schema 99"):
        open_queue(pg_url)
    with pytest.raises(BackendUnavailable, match="newer steadyq"):
        open_queue(pg_url, read_only=True)


def test_read_only_open_creates_nothing_and_writes_nothing(pg_url: str) -> None:
    with pytest.raises(BackendUnavailable, match="no steadyq database"):
        open_queue(pg_url, read_only=True)
    with open_queue(pg_url) as q:
        q.publish(b"x")
    with open_queue(pg_url, read_only=True) as looker:
        assert looker.stats().ready == 1
        with pytest.raises(BackendError, match="read-only"):
            looker.publish(b"y")


def test_bad_urls_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="PostgreSQL's own"):
        open_queue(BASE_URL + "?schema=pg_x")
    with pytest.raises(ConfigError, match="lowercase"):
        open_queue(BASE_URL + "?schema=Bad-Name")
    with pytest.raises(ConfigError, match="notify"):
        open_queue(BASE_URL + "?schema=ok&notify=maybe")


def test_unreachable_server_is_backend_unavailable() -> None:
    with pytest.raises(BackendUnavailable, match="cannot connect to PostgreSQL"):
        open_queue("postgresql://postgres@127.0.0.1:9/test?connect_timeout=2")


def _terminate(pg_url: str) -> int:
    """End every other session of this test's schema's pool (the server itself stays
    up: other engineers use it)."""
    schema = pg_url.split("schema=")[1].split("&")[0]
    with psycopg.connect(BASE_URL, autocommit=True) as admin:
        rows = admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE application_name = %s AND pid <> pg_backend_pid()",
            (f"steadyq {schema}",),
        ).fetchall()
    return len(rows)


def test_a_killed_connection_is_an_outage_and_the_next_call_works(pg_url: str) -> None:
    with open_queue(pg_url) as q:
        q.publish(b"x")
        assert _terminate(pg_url) >= 1
        failures = 0
        for _ in range(5):
            try:
                q.stats()
                break
            except BackendUnavailable as exc:
                assert "terminat" in str(exc) or "closed" in str(exc) or "connection" in str(exc)
                failures += 1
        assert failures <= 2
        assert q.stats().ready == 1


def test_a_claim_after_a_bulk_publish_walks_the_index_not_a_sort(q: PostgresQueue) -> None:
    """Statistics taken while the table was empty (autovacuum off), then 20,000 rows:
    the claim is still an index scan in availability order that stops at its batch."""
    from steadyq.brokers.postgres import _INDEX_ONLY, _PULL

    q.publish(b"first")
    with q.db.transaction() as conn:
        conn.execute(q.db.sql("ANALYZE SQ.messages"))
    q.publish_batch([(b"x", None)] * 20_000)
    params = {"token": "t", "lease": 30.0, "n": 100, "now": None}
    with q.db.transaction() as conn:
        conn.execute(_INDEX_ONLY)  # as the pull does, in its transaction
        plan = "\n".join(r[0] for r in conn.execute("EXPLAIN " + q.db.sql(_PULL), params))
        conn.rollback()
    assert "Index Scan using messages_visible" in plan, plan
    assert "Sort" not in plan and "Seq Scan" not in plan, plan
    assert [d.body for d in q.pull(2, 30)] == [b"first", b"x"]


def test_a_frozen_transaction_does_not_hide_its_messages_for_long(pg_url: str) -> None:
    """A worker frozen inside a transaction (SIGSTOP, a paused VM) holds row locks; the
    server ends such a session after ``idle_in_transaction_s`` and the rows are free."""
    with open_queue(pg_url + "&idle_in_transaction_s=1") as frozen, open_queue(pg_url) as other:
        assert isinstance(frozen, PostgresQueue)
        frozen.publish(b"x")
        with frozen.db.pool.connection() as conn:
            conn.execute(frozen.db.sql("SELECT seq FROM SQ.messages FOR UPDATE")).fetchall()
            # ... and the process stops here, its transaction open
            assert other.pull(1, 30) == [], "the locked row is skipped"
            wait_until(lambda: other.pull(1, 30), timeout=30)
            with pytest.raises(psycopg.Error) as ended:
                conn.execute("SELECT 1")
            # the resumed worker sees an outage (and retries), as after a restart
            assert isinstance(driver_error(ended.value, "x"), BackendUnavailable)


def test_the_urls_own_libpq_options_are_kept_beside_steadyqs(pg_url: str) -> None:
    url = pg_url + "&options=-c%20statement_timeout%3D12345&synchronous_commit=off"
    with open_queue(url) as q:
        assert isinstance(q, PostgresQueue)
        with q.db.reading() as conn:
            shown = [
                conn.execute(f"SHOW {name}").fetchone()
                for name in (
                    "statement_timeout",
                    "synchronous_commit",
                    "idle_in_transaction_session_timeout",
                )
            ]
    assert shown == [("12345ms",), ("off",), ("30s",)]


def test_settled_rows_are_vacuumed_away_without_autovacuum(pg_url: str) -> None:
    """Acked rows leave dead tuples; with autovacuum off nothing removes them, so a
    process vacuums the hot tables itself after ``vacuum_every`` settled messages."""
    schema = pg_url.split("schema=")[1].split("&")[0]
    with open_queue(pg_url + "&vacuum_every=500") as q:
        assert isinstance(q, PostgresQueue)
        q.publish_batch([(b"x", None)] * 1200)
        while batch := q.pull(100, 30):
            q.settle([Settlement.ack(d) for d in batch])

        def vacuumed() -> bool:
            with psycopg.connect(BASE_URL) as look:
                row = look.execute(
                    "SELECT vacuum_count + autovacuum_count FROM pg_stat_user_tables"
                    " WHERE schemaname = %s AND relname = 'messages'",
                    (schema,),
                ).fetchone()
            return bool(row and row[0] >= 1)

        wait_until(vacuumed, timeout=60, step=0.3)


def test_an_idle_worker_is_woken_by_a_publish_not_by_its_poll(pg_url: str) -> None:
    """A forever worker polling every 10 s runs a message published while it idles
    within a second, while its next poll is seconds away: the NOTIFY wakes it."""
    import json
    import threading
    import uuid

    from steadyq import Worker, WorkerOptions
    from steadyq.brokers import open_queue, store_for

    queue = open_queue(pg_url)
    worker = Worker(
        queue,
        store_for(queue),
        WorkerOptions(handler="steadyq.handlers:noop", runner="inline", idle_poll_s=10.0),
    )
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    try:
        time.sleep(3.0)  # its empty polls are 2.5 s apart by now (they double)
        with open_queue(pg_url) as publisher:
            t0 = time.monotonic()
            publisher.publish(json.dumps({"request_id": str(uuid.uuid4())}).encode())
        end = t0 + 8
        while worker.counts["succeeded"] < 1 and time.monotonic() < end:
            time.sleep(0.01)
        took = time.monotonic() - t0
        assert worker.counts["succeeded"] == 1, "not run before its poll came round"
        assert took < 1.0, took
    finally:
        worker.request_stop("test over")
        thread.join(30)
        queue.close()
    assert not thread.is_alive()
