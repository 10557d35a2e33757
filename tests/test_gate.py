from __future__ import annotations

import json
import uuid

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from steadyq.content import ContentRequest
from steadyq.errors import ConfigError
from steadyq.gate import REASONS, Gate, Rejection, Request, canonical_request_id

GOOD = "6f9619ff-8b86-d011-b42d-00c04fc964ff"
gate = Gate(ContentRequest)  # the content workload's model: the richest checks


def body(**fields: object) -> bytes:
    return json.dumps(fields).encode()


def reason(raw: bytes, g: Gate = gate) -> str:
    result = g.check(raw)
    assert isinstance(result, Rejection), result
    return result.reason


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b"\xff\xfe", "payload_not_utf8"),
        (b"\xed\xa0\x80", "payload_not_utf8"),  # an encoded lone surrogate
        (b"", "payload_not_json"),
        (b"request_id=1", "payload_not_json"),
        (b"NaN", "payload_not_json"),
        (b'{"request_id": "' + GOOD.encode() + b'", "topic": Infinity}', "payload_not_json"),
        (b"\xef\xbb\xbf{}", "payload_not_json"),  # a byte-order mark
        (b"[" * 100_000, "payload_not_json"),
        (b"[]", "payload_not_object"),
        (b'"text"', "payload_not_object"),
        (b"42", "payload_not_object"),
        (b"null", "payload_not_object"),
        (body(topic="x"), "request_id_missing"),
        (body(request_id=None, topic="x"), "request_id_missing"),
        (body(request_id="test-smoke-001", topic="x"), "request_id_invalid"),
        (body(request_id="invalid-uuid-test-1762216900", topic="x"), "request_id_invalid"),
        (body(request_id="test2_text_only", topic="x"), "request_id_invalid"),
        (body(request_id="{" + GOOD + "}", topic="x"), "request_id_invalid"),
        (body(request_id="urn:uuid:" + GOOD, topic="x"), "request_id_invalid"),
        (body(request_id=GOOD.replace("-", ""), topic="x"), "request_id_invalid"),
        (body(request_id=" " + GOOD, topic="x"), "request_id_invalid"),
        (body(request_id=GOOD + "\n", topic="x"), "request_id_invalid"),
        (body(request_id="٦f9619ff-8b86-d011-b42d-00c04fc964ff", topic="x"), "request_id_invalid"),
        (body(request_id=12345, topic="x"), "request_id_invalid"),
        (body(request_id="", topic="x"), "request_id_invalid"),
        (body(request_id=GOOD), "schema_invalid"),
        (body(request_id=GOOD, topic=""), "schema_invalid"),
        (body(request_id=GOOD, topic="x", grade_level=13), "schema_invalid"),
        (body(request_id=GOOD, topic="x", grade_level="5"), "schema_invalid"),
        (body(request_id=GOOD, topic="x", modalities=[]), "schema_invalid"),
        (body(request_id=GOOD, topic="x", modalities=["audio"]), "schema_invalid"),
        (body(request_id=GOOD, topic="x", unknown=1), "schema_invalid"),
    ],
)
def test_each_failure_has_its_reason(raw: bytes, expected: str) -> None:
    assert reason(raw) == expected


def test_oversized_payload_is_rejected_before_parsing() -> None:
    small = Gate(max_bytes=100)
    assert reason(b"{" + b" " * 200 + b"}", small) == "payload_too_large"
    assert reason(b"x" * (10 * 1024 * 1024 + 1)) == "payload_too_large"


def test_rejection_names_failing_fields_and_escapes_the_value() -> None:
    result = gate.check(body(request_id=GOOD, topic="", grade_level=0))
    assert isinstance(result, Rejection)
    assert set(result.fields) == {"topic", "grade_level"}
    bad = gate.check(body(request_id="\x1b[31mred\u202e", topic="x"))
    assert isinstance(bad, Rejection)
    assert bad.value is not None and "\x1b" not in bad.value and "\u202e" not in bad.value
    assert bad.log_text.startswith("Invalid request_id format: ")
    assert bad.value.isascii()


@pytest.mark.parametrize(
    ("extra", "modalities"),
    [
        ({}, ("video",)),  # before modalities existed: video
        ({"modalities": None}, ("video",)),
        ({"modalities": ["text"]}, ("text",)),
        ({"modalities": ["video"]}, ("video",)),
        ({"modalities": ["video", "text", "text"]}, ("text", "video")),
    ],
)
def test_the_three_tested_shapes_validate(extra: dict[str, object], modalities: tuple[str]) -> None:
    upper = GOOD.upper()
    result = gate.check(body(request_id=upper, topic="fractions", interests=["music"], **extra))
    assert isinstance(result, ContentRequest)
    assert result.request_id == GOOD, "stored lower-case"
    assert result.modalities == modalities


def test_custom_schema() -> None:
    class Ping(BaseModel):
        request_id: str
        n: int

    g = Gate(Ping)
    ok = g.check(body(request_id=GOOD, n=3))
    assert isinstance(ok, Ping) and ok.n == 3
    assert reason(body(request_id=GOOD), g) == "schema_invalid"
    assert reason(body(n=3), g) == "request_id_missing"


def test_a_crashing_validator_is_a_rejection_not_an_exception() -> None:
    from pydantic import field_validator

    class Fragile(BaseModel):
        request_id: str

        @field_validator("request_id")
        @classmethod
        def boom(cls, value: str) -> str:
            raise RuntimeError("bug in user code")

    assert reason(body(request_id=GOOD), Gate(Fragile)) == "schema_invalid"


def test_canonical_request_id() -> None:
    assert canonical_request_id(str(uuid.uuid4()).upper()) is not None
    assert canonical_request_id(GOOD[:-1] + "g") is None
    assert canonical_request_id(None) is None


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=2048))
def test_never_raises_on_any_bytes(raw: bytes) -> None:
    result = gate.check(raw)
    assert isinstance(result, ContentRequest | Rejection)
    if isinstance(result, Rejection):
        assert result.reason in REASONS


@settings(max_examples=400, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(
            ["request_id", "topic", "student_id", "interests", "grade_level", "modalities", "x"]
        ),
        json_values | st.just(GOOD) | st.uuids().map(str),
        max_size=7,
    )
)
def test_never_raises_on_any_json_object(fields: dict[str, object]) -> None:
    raw = json.dumps(fields).encode()
    result = gate.check(raw)
    if isinstance(result, Rejection):
        assert result.reason in REASONS
        assert result.log_text.isascii() or result.value is None
    else:
        assert isinstance(result, ContentRequest)
        assert canonical_request_id(result.request_id) == result.request_id


def test_unknown_fields_are_refused_unless_the_configuration_allows_them() -> None:
    data = body(request_id=GOOD, topic="fractions", campaign="spring")
    refused = Gate(ContentRequest).check(data)
    assert isinstance(refused, Rejection) and refused.reason == "schema_invalid"
    assert refused.fields == ("campaign",)
    accepted = Gate(ContentRequest, allow_unknown_fields=True).check(data)
    assert not isinstance(accepted, Rejection)
    assert accepted.model_dump()["topic"] == "fractions" and "campaign" not in accepted.model_dump()
    # everything else is still checked
    bad = Gate(ContentRequest, allow_unknown_fields=True).check(
        body(request_id=GOOD, topic="", campaign="x")
    )
    assert isinstance(bad, Rejection) and bad.fields == ("topic",)


# -- the core's default request ---------------------------------------------------------


def test_the_default_request_is_an_id_and_whatever_else_the_body_holds() -> None:
    default = Gate()
    assert default.schema is Request
    result = default.check(body(request_id=GOOD.upper(), topic="fractions", n=[1, 2]))
    assert isinstance(result, Request) and not isinstance(result, ContentRequest)
    assert result.request_id == GOOD
    assert result.topic == "fractions"  # type: ignore[attr-defined]
    assert result.model_extra == {"topic": "fractions", "n": [1, 2]}
    # what the content model refuses is the content workload's business, not the core's
    assert isinstance(default.check(body(request_id=GOOD, modalities=["audio"])), Request)
    assert reason(body(request_id="test-smoke-001"), default) == "request_id_invalid"
    assert reason(body(topic="x"), default) == "request_id_missing"


def test_allowing_unknown_fields_keeps_them_on_a_model_that_keeps_them() -> None:
    kept = Gate(allow_unknown_fields=True).check(body(request_id=GOOD, campaign="spring"))
    assert isinstance(kept, Request) and kept.model_extra == {"campaign": "spring"}


def test_the_core_request_id_is_checked_by_the_model_too() -> None:
    # a caller that builds requests without the gate gets the same rule
    assert Request(request_id=GOOD.upper()).request_id == GOOD
    with pytest.raises(ValueError, match="request_id"):
        Request(request_id="test-smoke-001")


def test_a_schema_without_request_id_is_refused_when_the_gate_is_made() -> None:
    class Ping(BaseModel):
        n: int

    with pytest.raises(ConfigError, match=r"Ping has no request_id field"):
        Gate(Ping)
    with pytest.raises(ConfigError, match="not a pydantic model"):
        Gate(dict)  # type: ignore[arg-type]


def test_a_model_that_validates_its_own_way_is_asked_itself() -> None:
    from typing import Any

    from steadyq.gate import Request

    seen: list[Any] = []

    class Own(Request):
        @classmethod
        def model_validate(cls, obj: Any, **kwargs: Any) -> Own:  # type: ignore[override]
            seen.append(obj)
            return super().model_validate(obj, **kwargs)

    rid = "0B5D7A8E-1C2F-4A3B-9D4E-5F6A7B8C9D0E"
    checked = Gate(Own).check(f'{{"request_id": "{rid}"}}'.encode())
    assert isinstance(checked, Own) and checked.request_id == rid.lower()
    assert seen == [{"request_id": rid.lower()}]


def test_the_scanner_shortcut_decides_as_the_decoder_does() -> None:
    from steadyq.gate import _decode, _decode_object

    for text in ('{"a": 1}', '{"a": 1} ', ' {"a": 1}', '{"a": 1}x', '{"a": NaN}', "{", "[1]", ""):
        try:
            expected: object = _decode(text)
        except ValueError as exc:
            expected = str(exc)
        try:
            got: object = _decode_object(text)
        except ValueError as exc:
            got = str(exc)
        assert got == expected, text
