"""``steadyq schema``: the JSON Schema of the requests a worker would accept."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from steadyq._options import ConfigOpt
from steadyq.config import load_settings
from steadyq.exit_codes import exits_on_error

JSON_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"


def request_json_schema(
    schema: str | None = None,
    handler: str | None = None,
    *,
    allow_unknown_fields: bool = False,
    max_bytes: int | None = None,
) -> dict[str, Any]:
    """The JSON Schema of the model the gate would validate with (see
    :func:`steadyq.handlers.worker_schema`), as the gate applies it.

    Raises:
        HandlerLoadError: the handler or schema cannot be imported.
        ConfigError: the schema is not a pydantic model with a ``request_id`` field.
    """
    from steadyq.gate import DEFAULT_MAX_BYTES, Gate
    from steadyq.handlers import worker_schema

    limit = DEFAULT_MAX_BYTES if max_bytes is None else max_bytes
    gate = Gate(
        worker_schema(schema, handler), allow_unknown_fields=allow_unknown_fields, max_bytes=limit
    )
    document: dict[str, Any] = {"$schema": JSON_SCHEMA_DIALECT}
    document.update(gate.schema.model_json_schema())
    document.setdefault(
        "description",
        "A steadyq request: the JSON object of one message body.",
    )
    # what the gate checks besides the model, for a reader of the schema
    document["x-steadyq-gate"] = {
        "max_bytes": gate.max_bytes,
        "encoding": "utf-8",
        "checked_first": ["request_id"],
    }
    return document


def schema_command(
    handler: Annotated[
        str | None,
        typer.Option(help="Print the schema this handler brings (module:function)."),
    ] = None,
    request_schema: Annotated[
        str | None,
        typer.Option("--schema", help="Print this model's schema (module:Class)."),
    ] = None,
    config: ConfigOpt = None,
) -> None:
    """Print the JSON Schema of the request model a worker validates with.

    The same choice as `steadyq worker`: --schema, else the handler's own
    request_schema, else the core's default (a request_id and any other fields).
    Settings come from steadyq.toml and STEADYQ_WORKER_* as for the worker.
    Exit codes: 0 printed, 2 bad settings or schema, 4 handler unloadable.
    """
    with exits_on_error():
        settings = load_settings(
            config, overrides={"worker": {"handler": handler, "schema": request_schema}}
        )
        ws = settings.worker
        document = request_json_schema(
            ws.request_schema,
            ws.handler,
            allow_unknown_fields=ws.allow_unknown_fields,
            max_bytes=ws.max_bytes,
        )
    typer.echo(json.dumps(document, indent=2, ensure_ascii=False))
