"""The gate: any bytes in, a validated request or a :class:`Rejection` out, never an exception.

Checks run cheapest first, so a poison message costs microseconds:

1. size (``payload_too_large``; Pub/Sub's own limit of 10 MB by default)
2. UTF-8 (``payload_not_utf8``)
3. JSON (``payload_not_json``; NaN, Infinity and absurd nesting count as not JSON)
4. an object at the top (``payload_not_object``)
5. ``request_id`` present (``request_id_missing``) and a canonical UUID
   (``request_id_invalid``): 8-4-4-4-12 ASCII hex digits, either case, nothing around it
6. the request model (``schema_invalid``, naming the failing fields): by default
   :class:`Request`, a ``request_id`` and whatever else the body holds; a handler
   brings its own (``request_schema``, see ``docs/handlers.md``) or ``--schema`` names one.

Every model must have a ``request_id`` field: the worker keys its ledger (duplicates,
attempts, the ``requests`` table) on it, so a model without one is refused when the
gate is made, not discovered when every request turns out to share one key.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from pydantic import BaseModel, ConfigDict, Field, StrictStr, ValidationError, field_validator

from steadyq.errors import ConfigError

PAYLOAD_TOO_LARGE: Final = "payload_too_large"
PAYLOAD_NOT_UTF8: Final = "payload_not_utf8"
PAYLOAD_NOT_JSON: Final = "payload_not_json"
PAYLOAD_NOT_OBJECT: Final = "payload_not_object"
REQUEST_ID_MISSING: Final = "request_id_missing"
REQUEST_ID_INVALID: Final = "request_id_invalid"
SCHEMA_INVALID: Final = "schema_invalid"

REASONS: Final = (
    PAYLOAD_TOO_LARGE,
    PAYLOAD_NOT_UTF8,
    PAYLOAD_NOT_JSON,
    PAYLOAD_NOT_OBJECT,
    REQUEST_ID_MISSING,
    REQUEST_ID_INVALID,
    SCHEMA_INVALID,
)

# The log line the incident team grepped for; kept word for word.
LOG_TEXT: Final = {
    PAYLOAD_TOO_LARGE: "Request payload too large",
    PAYLOAD_NOT_UTF8: "Request payload is not UTF-8",
    PAYLOAD_NOT_JSON: "Request payload is not JSON",
    PAYLOAD_NOT_OBJECT: "Request payload is not a JSON object",
    REQUEST_ID_MISSING: "Missing request_id",
    REQUEST_ID_INVALID: "Invalid request_id format",
    SCHEMA_INVALID: "Request failed schema validation",
}

DEFAULT_MAX_BYTES: Final = 10 * 1024 * 1024

# [0-9a-fA-F] rather than \d or str.isdigit: both accept non-ASCII digits.
UUID_PATTERN: Final = (
    "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
)
_CANONICAL_UUID = re.compile(UUID_PATTERN[1:-1])
_SHOW_LIMIT = 120


def canonical_request_id(value: object) -> str | None:
    """The lower-case form of a canonical UUID string, or None when ``value`` is not one."""
    if value is _vouched[0]:
        return value
    if isinstance(value, str) and len(value) == 36 and _CANONICAL_UUID.fullmatch(value):
        return value.lower()
    return None


# The id the gate checked last, as it hands it to the model's validator: that very
# object (``is``, never ``==``) is known canonical, so the validator's own check of it
# costs nothing. A later check overwrites it; an object that is not it is checked.
_vouched: list[str | None] = [None]


def show(value: object) -> str:
    """A safe, short, ASCII-only rendering of a value that came from a message."""
    try:
        text = json.dumps(value, ensure_ascii=True, default=repr)
    except Exception:  # e.g. recursion in a pathological value
        text = ascii(type(value).__name__)
    if len(text) > _SHOW_LIMIT:
        text = text[: _SHOW_LIMIT - 3] + "..."
    return text


@dataclass(frozen=True, slots=True)
class Rejection:
    """Why a message can never be processed. Terminal: it is dead-lettered, never retried.

    ``reason`` is one of :data:`REASONS`; ``detail`` is human text; ``value`` the
    offending value, already escaped; ``fields`` the failing schema fields.
    """

    reason: str
    detail: str
    value: str | None = None
    fields: tuple[str, ...] = ()

    @property
    def log_text(self) -> str:
        """The WARNING line the worker writes for this rejection (value escaped)."""
        base = LOG_TEXT.get(self.reason, "Request rejected")
        return f"{base}: {self.value}" if self.value is not None else f"{base}: {self.detail}"


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


# one decoder for every body (json.loads with an argument builds a new one per call)
_decoder = json.JSONDecoder(parse_constant=_refuse_constant)
_decode = _decoder.decode
# the decoder's own scanner, for the common case below
_scan = _decoder.scan_once  # type: ignore[attr-defined]


def _decode_object(text: str) -> Any:
    """``_decode(text)``: a body that is one JSON object, nothing around it, is read by
    the decoder's scanner directly (what ``decode`` does after its checks); anything
    else, and every error, goes through ``decode`` itself (same result, same errors)."""
    if text[:1] == "{":
        try:
            value, end = _scan(text, 0)
        except Exception:  # decode raises the error it always raised
            return _decode(text)
        if end == len(text):
            return value
    return _decode(text)


class Request(BaseModel):
    """The core's request: a ``request_id`` and whatever else the body holds.

    The other fields are kept as they came (``request.topic``, ``request.model_extra``).
    A workload with a shape of its own subclasses this (the validator below comes
    along) or writes any pydantic model with a ``request_id`` field.
    """

    model_config = ConfigDict(
        extra="allow",
        frozen=True,
        json_schema_extra={
            "description": "A steadyq request: a request_id, and any other fields, kept as sent."
        },
    )

    request_id: StrictStr = Field(
        pattern=UUID_PATTERN,
        description="A UUID in canonical 8-4-4-4-12 form, either case; stored lower-case."
        " The key of the request ledger: a redelivered request that completed is acked"
        " as a duplicate.",
    )

    @field_validator("request_id")
    @classmethod
    def _canonical_id(cls, value: str) -> str:
        canonical = canonical_request_id(value)
        if canonical is None:
            raise ValueError("request_id must be a UUID in canonical 8-4-4-4-12 form")
        return canonical


def check_schema(schema: object) -> type[BaseModel]:
    """``schema`` itself, if the gate can validate requests with it.

    Raises:
        ConfigError: it is not a pydantic model, or it has no ``request_id`` field.
    """
    if not (isinstance(schema, type) and issubclass(schema, BaseModel)):
        raise ConfigError(f"request schema {schema!r} is not a pydantic model class")
    if "request_id" not in schema.model_fields:
        raise ConfigError(
            f"request schema {schema.__module__}.{schema.__qualname__} has no request_id"
            " field: the ledger keys every request on it (give the model"
            " `request_id: str`, or subclass steadyq.Request)"
        )
    return schema


def _ignoring_unknown_fields(schema: type[BaseModel]) -> type[BaseModel]:
    """A subclass of ``schema`` that drops unknown fields instead of refusing them."""
    config = ConfigDict(**{**schema.model_config, "extra": "ignore"})
    lenient: type[BaseModel] = type(schema.__name__, (schema,), {"model_config": config})
    return lenient


class Gate:
    """Validates raw message bodies against a pydantic model (default :class:`Request`).

    The model must have a ``request_id`` field (:func:`check_schema`); the gate checks
    it first so that a malformed id gets its own reason code whatever else is wrong.

    Raises:
        ConfigError: ``schema`` is not a pydantic model or has no ``request_id`` field.
    """

    def __init__(
        self,
        schema: type[BaseModel] | None = None,
        *,
        max_bytes: int = DEFAULT_MAX_BYTES,
        allow_unknown_fields: bool = False,
    ) -> None:
        schema = Request if schema is None else check_schema(schema)
        # a model that refuses unknown fields is relaxed; one that keeps them stays so
        if allow_unknown_fields and schema.model_config.get("extra") == "forbid":
            schema = _ignoring_unknown_fields(schema)
        self.schema = schema
        self.max_bytes = max_bytes
        # the model's validator itself, unless the model validates its own way
        self._validate: Callable[[Any], BaseModel]
        own = getattr(schema.model_validate, "__func__", None)
        if own is getattr(BaseModel.model_validate, "__func__", BaseModel):
            self._validate = schema.__pydantic_validator__.validate_python
        else:
            self._validate = schema.model_validate

    def check(self, body: bytes) -> BaseModel | Rejection:
        """Return the validated request, or the rejection; never raises."""
        try:
            return self._check(body)
        except Exception as exc:  # the gate's promise: whatever happens, no exception
            return Rejection(SCHEMA_INVALID, f"validation crashed: {type(exc).__name__}")

    def _check(self, body: bytes) -> BaseModel | Rejection:
        try:
            size = len(body)
        except TypeError:
            return Rejection(PAYLOAD_NOT_UTF8, f"payload is {type(body).__name__}, not bytes")
        if size > self.max_bytes:
            return Rejection(
                PAYLOAD_TOO_LARGE, f"payload is {size} bytes; the limit is {self.max_bytes}"
            )
        try:
            text = bytes(body).decode("utf-8")
        except (UnicodeDecodeError, TypeError, ValueError) as exc:
            return Rejection(PAYLOAD_NOT_UTF8, f"payload is not valid UTF-8 ({exc})")
        try:
            data = _decode_object(text)
        except RecursionError:
            return Rejection(PAYLOAD_NOT_JSON, "payload nests too deeply")
        except ValueError as exc:
            return Rejection(PAYLOAD_NOT_JSON, f"payload is not JSON: {exc}")
        if not isinstance(data, dict):
            return Rejection(
                PAYLOAD_NOT_OBJECT, f"payload is a JSON {_json_type(data)}, not an object"
            )
        if "request_id" not in data or data["request_id"] is None:
            return Rejection(REQUEST_ID_MISSING, "payload has no request_id")
        raw_id = data["request_id"]
        canonical = canonical_request_id(raw_id)
        if canonical is None:
            return Rejection(
                REQUEST_ID_INVALID,
                "request_id is not a UUID in canonical 8-4-4-4-12 form",
                value=show(raw_id),
            )
        data["request_id"] = canonical
        _vouched[0] = canonical
        try:
            validated: BaseModel = self._validate(data)
            return validated
        except ValidationError as exc:
            errors = exc.errors(include_url=False, include_input=False, include_context=False)
            fields = tuple(".".join(str(p) for p in err["loc"]) or "(root)" for err in errors)
            detail = "; ".join(
                f"{field}: {err['msg']}" for field, err in zip(fields, errors, strict=True)
            )
            return Rejection(SCHEMA_INVALID, detail[:1000], fields=fields)


def _json_type(value: object) -> str:
    if isinstance(value, list):
        return "array"
    if isinstance(value, str):
        return "string"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    return "null"


def request_id_of(body: bytes) -> str | None:
    """Best-effort request id of a raw body for labelling (never raises, never trusted)."""
    try:
        data = json.loads(bytes(body).decode("utf-8"))
    except Exception:
        return None
    if isinstance(data, dict):
        return canonical_request_id(data.get("request_id"))
    return None
