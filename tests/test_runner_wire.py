"""The process runner's wire: a pydantic request reaches the handler child as the
same model (its values, fields set, extra and private attributes), whether it went as
its state (a plain model) or whole (anything else)."""

from __future__ import annotations

import pickle
import time
from typing import Any

import pytest

from steadyq.runner import Call, ProcessRunner
from steadyq.runner_child import _PLAIN_MODELS, _plain_model, _wire_into
from tests.runner_wire_handlers import Open, OwnPickle, Plain, Secretive


def _secretive() -> Secretive:
    made = Secretive(request_id="r-secret")
    made._seen = 3
    return made


def test_only_plain_models_go_as_their_state() -> None:
    assert _plain_model(Plain(request_id="r"))
    assert _plain_model(Open(request_id="r", more=1))
    assert _plain_model(Secretive(request_id="r"))  # sent whole when it holds private values
    assert not _plain_model(OwnPickle(request_id="r"))
    assert not _plain_model(("a", "tuple"))
    assert not _plain_model({"request_id": "r"})


def test_the_wire_carries_a_plain_model_as_its_state() -> None:
    batch: list[Any] = []
    request = Plain(request_id="r", tags=("a",))
    _wire_into(batch, 0, Call(1, request, 1, "m", "r", {}, 30.0))
    assert batch[2] is Plain and batch[3] == {
        "request_id": "r",
        "topic": "fractions",
        "tags": ("a",),
    }
    assert batch[4] == {"request_id", "tags"}
    batch = []
    _wire_into(batch, 0, Call(2, _secretive(), 1, "m", "r", {}, 30.0))
    assert batch[2] is None and isinstance(batch[3], Secretive)
    assert _PLAIN_MODELS[Plain] is True and _PLAIN_MODELS[Secretive] is True
    pickle.dumps(batch)


@pytest.fixture(scope="module")
def described() -> dict[int, dict[str, Any]]:
    """One child, one batch of every kind of request, and what the handler saw."""
    runner = ProcessRunner(
        "tests.runner_wire_handlers:describe",
        concurrency=1,
        execution_id="t",
        emit=lambda e: None,
    )
    runner.start()
    try:
        requests: list[Any] = [
            Plain(request_id="r-plain", tags=("x", "y")),
            Plain(request_id="r-defaults"),
            Open(request_id="r-open", more={"k": [1, 2]}),
            _secretive(),
            OwnPickle(request_id="r-own"),
            ("not", "a", "model"),
        ]
        for n, request in enumerate(requests, 1):
            runner.submit(Call(n, request, 1, f"m{n}", f"r{n}", {}, 30.0))
        got: dict[int, dict[str, Any]] = {}
        give_up = time.monotonic() + 30
        while len(got) < len(requests) and time.monotonic() < give_up:
            for outcome in runner.poll(0.05):
                assert outcome.status == "ok", outcome
                assert outcome.result is not None
                got[outcome.call_id] = outcome.result
        return got
    finally:
        runner.close()


def test_a_plain_model_arrives_as_the_same_model(described: dict[int, dict[str, Any]]) -> None:
    assert described[1] == {
        "type": "Plain",
        "dump": {"request_id": "r-plain", "topic": "fractions", "tags": ["x", "y"]},
        "fields_set": ["request_id", "tags"],
        "extra": None,
        "private": None,
        "equal": True,
    }
    assert described[2]["fields_set"] == ["request_id"]


def test_extra_fields_arrive(described: dict[int, dict[str, Any]]) -> None:
    assert described[3]["extra"] == {"more": {"k": [1, 2]}}
    assert described[3]["dump"] == {"request_id": "r-open", "more": {"k": [1, 2]}}


def test_private_values_and_own_pickling_go_whole(described: dict[int, dict[str, Any]]) -> None:
    assert described[4]["private"] == {"_seen": 3}
    assert described[5]["dump"] == {"request_id": "pickled by its own code"}


def test_anything_else_arrives_whole(described: dict[int, dict[str, Any]]) -> None:
    assert described[6] == {"type": "tuple", "value": ["not", "a", "model"]}
