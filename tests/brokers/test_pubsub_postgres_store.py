"""Pub/Sub with a shared PostgreSQL store: attempt counts and the ledger belong to every
execution, so a message whose handler kills its process reaches the DLQ after
``--max-attempts`` runs counted across executions (fresh containers), not per
execution as with a container-local SQLite file."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable

import pytest

from steadyq import RetryPolicy, Worker, WorkerOptions
from steadyq.brokers import open_queue, store_for
from steadyq.brokers.pubsub import setup
from steadyq.telemetry import events as ev
from steadyq.telemetry.store import EventFilter
from steadyq.telemetry.store_postgres import PostgresStore
from tests.brokers.conftest import PROJECT
from tests.postgres_db import postgres_url


@pytest.mark.slow
def test_attempts_and_ledger_survive_executions_and_the_dlq_is_reached_across_them(
    pubsub_host: str, unique: Callable[[str], str]
) -> None:
    topic, sub = unique("topic"), unique("sub")
    setup(PROJECT, topic, sub, min_backoff_s=0, max_backoff_s=0, max_delivery_attempts=20)
    rid = str(uuid.uuid4())
    ok_rid = str(uuid.uuid4())
    with postgres_url() as store_url:
        publisher = open_queue(f"pubsub://{PROJECT}/{topic}")
        killer = publisher.publish(json.dumps({"request_id": rid, "topic": "exit"}).encode())
        publisher.publish(json.dumps({"request_id": ok_rid, "topic": "ok"}).encode())
        publisher.close()
        options = WorkerOptions(
            handler="tests.worker_handlers:by_topic",
            runner="process",
            concurrency=1,
            deadline_s=10,
            lease_s=10,
            # one failed run per execution: the retry waits longer than a drain lasts
            retry=RetryPolicy(2.5, 2.5, 3),
            drain=True,
            idle_poll_s=0.05,
        )
        executions: list[str] = []
        for _ in range(6):  # each a fresh "container": its own queue and store objects
            queue = open_queue(f"pubsub://{PROJECT}/{sub}")
            store = store_for(queue, store_url)
            assert isinstance(store, PostgresStore)
            result = Worker(queue, store, options).run()
            executions.append(result.execution_id)
            letters = queue.dlq_list()
            queue.close()
            if letters:
                break
            time.sleep(3)  # the retry delay passes; the next execution gets the message
        assert [x.message_id for x in letters] == [killer]
        [letter] = letters
        assert letter.reason == "max_attempts_exceeded"
        assert len(executions) == 3, "three runs, one per execution, counted across them"

        with open_queue(f"pubsub://{PROJECT}/{sub}") as queue:
            store = store_for(queue, store_url)
            failed = store.events(EventFilter(kinds=(ev.MESSAGE_FAILED,), message_id=killer))
            assert [e.attempt for e in failed] == [1, 2, 3]
            assert len({e.execution_id for e in failed}) == 3
            [row] = store.requests(request_id=rid)
            assert row.status == "failed" and row.attempts == 3
            assert store.completed([rid, ok_rid]) == {ok_rid}
            assert len(store.executions()) == 3
