"""A handler brings its own request model; the worker refuses what would break the ledger."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from pydantic import BaseModel, ConfigDict

from steadyq import ConfigError, ExitCode, Request, RetryPolicy, Worker, WorkerOptions
from steadyq.brokers.memory import MemoryQueue
from steadyq.handlers import record, request_schema_of, with_schema
from steadyq.runner import HandlerContext

CALLS: list[Any] = []


class Ping(BaseModel):
    """A model without request_id: every request would share one ledger key."""

    model_config = ConfigDict(extra="ignore")
    n: int


class Order(Request):
    model_config = ConfigDict(extra="forbid", frozen=True)
    n: int
    sku: str


def counting(request: Any, ctx: HandlerContext) -> None:
    CALLS.append(request)


@with_schema(Order)
def orders(request: Order, ctx: HandlerContext) -> None:
    CALLS.append(request)


def broken_schema(request: Any, ctx: HandlerContext) -> None:
    CALLS.append(request)


broken_schema.request_schema = Ping  # type: ignore[attr-defined]


@pytest.fixture(autouse=True)
def _calls() -> None:
    CALLS.clear()


def bodies(count: int, **fields: object) -> list[bytes]:
    return [
        json.dumps({"request_id": str(uuid.uuid4()), "n": i, **fields}).encode()
        for i in range(count)
    ]


def drain(queue: MemoryQueue, **kw: Any) -> Any:
    options = WorkerOptions(
        runner="inline", drain=True, retry=RetryPolicy(0, 0, 3), idle_poll_s=0.01, **kw
    )
    return Worker(queue, queue.colocated_store, options).run()


def test_a_schema_without_request_id_is_refused_before_any_message_is_touched() -> None:
    # before: 3 different requests gave 1 handler call and 2 "duplicate" acks
    queue = MemoryQueue()
    queue.publish_batch([(b, {}) for b in bodies(3)])
    with pytest.raises(ConfigError, match="has no request_id field"):
        Worker(queue, queue.colocated_store, WorkerOptions(handler=counting, schema=Ping))
    assert CALLS == [] and queue.stats().ready == 3


def test_a_handler_bringing_such_a_schema_cannot_start() -> None:
    queue = MemoryQueue()
    queue.publish_batch([(b, {}) for b in bodies(3)])
    result = drain(queue, handler=broken_schema)
    assert result.exit_code == ExitCode.HANDLER_UNLOADABLE
    assert "request_schema" in result.detail and "has no request_id field" in result.detail
    assert CALLS == [] and queue.stats().ready == 3


def test_each_distinct_request_runs_once_with_the_default_request() -> None:
    queue = MemoryQueue()
    queue.publish_batch([(b, {}) for b in bodies(3)])
    result = drain(queue, handler=counting)
    assert result.counts["succeeded"] == 3 and result.counts["duplicate"] == 0
    assert sorted(r.n for r in CALLS) == [0, 1, 2]  # the rest of the body came along
    assert all(type(r) is Request for r in CALLS)


def test_the_handler_s_own_schema_is_the_gate_s() -> None:
    assert request_schema_of(orders) is Order and request_schema_of(counting) is None
    queue = MemoryQueue()
    good = bodies(2, sku="A-1")
    queue.publish_batch([(b, {}) for b in [*good, *bodies(1)]])  # the last has no sku
    result = drain(queue, handler=orders)
    assert result.counts["succeeded"] == 2 and result.counts["rejected"] == 1
    assert all(isinstance(r, Order) for r in CALLS)
    [letter] = queue.dlq_list()
    assert letter.reason == "schema_invalid" and "sku" in letter.detail


def test_an_explicit_schema_wins_over_the_handler_s() -> None:
    queue = MemoryQueue()
    queue.publish_batch([(b, {}) for b in bodies(2)])  # no sku: Order would refuse them
    result = drain(queue, handler=orders, schema=Request)
    assert result.counts["succeeded"] == 2 and all(type(r) is Request for r in CALLS)


def test_with_schema_refuses_a_model_without_request_id_at_once() -> None:
    with pytest.raises(ConfigError, match="has no request_id field"):
        with_schema(Ping)


def test_there_is_no_default_handler() -> None:
    queue = MemoryQueue()
    queue.publish_batch([(b, {}) for b in bodies(1)])
    result = drain(queue)
    assert result.exit_code == ExitCode.HANDLER_UNLOADABLE
    assert "--handler" in result.detail and queue.stats().ready == 1


def test_the_content_handler_brings_the_content_request() -> None:
    from steadyq.content import ContentRequest, handle

    assert request_schema_of(handle) is ContentRequest
    assert request_schema_of(record) is None
