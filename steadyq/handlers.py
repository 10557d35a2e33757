"""The handler API's small helpers, and built-in handlers.

A handler is any importable callable ``handler(request, ctx)`` (see
``docs/handlers.md``). It may bring the model its requests are validated with, as
a ``request_schema`` attribute (:func:`with_schema` sets it); the worker's gate
then uses that model unless ``--schema`` names another. Without one, requests are
:class:`steadyq.gate.Request`: a ``request_id`` and whatever else the body holds.

``record`` accepts the request and does nothing else (the worker's
``message.succeeded`` event is the record); ``noop`` is the same, named for
benchmarks. There is no default handler: ``steadyq worker`` needs ``--handler``
(the content workload is ``steadyq.content:handle``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final, TypeVar

from pydantic import BaseModel

from steadyq.errors import ConfigError, HandlerLoadError
from steadyq.gate import Request, check_schema
from steadyq.runner_child import Handler, HandlerContext, load_handler

SCHEMA_ATTRIBUTE: Final = "request_schema"

_H = TypeVar("_H", bound=Callable[..., Any])


def with_schema(schema: type[BaseModel]) -> Callable[[_H], _H]:
    """Decorate a handler with the request model it expects::

        @with_schema(MyRequest)
        def handle(request: MyRequest, ctx: HandlerContext) -> None: ...

    Raises:
        ConfigError: ``schema`` is not a pydantic model with a ``request_id`` field.
    """
    checked = check_schema(schema)

    def mark(handler: _H) -> _H:
        setattr(handler, SCHEMA_ATTRIBUTE, checked)
        return handler

    return mark


def request_schema_of(handler: object) -> type[BaseModel] | None:
    """The request model ``handler`` brings (its ``request_schema``), or None.

    Raises:
        ConfigError: the attribute is set but is not a usable model.
    """
    schema = getattr(handler, SCHEMA_ATTRIBUTE, None)
    if schema is None:
        return None
    try:
        return check_schema(schema)
    except ConfigError as exc:
        raise ConfigError(f"{SCHEMA_ATTRIBUTE} of handler {handler!r}: {exc}") from None


def worker_schema(schema: str | None, handler: str | Handler | None) -> type[BaseModel]:
    """The model a worker's gate validates with: ``schema`` (``module:Class``) when
    given, else the handler's own ``request_schema``, else :class:`~steadyq.gate.Request`.

    Raises:
        HandlerLoadError: the handler or the schema cannot be imported, or the
            handler's ``request_schema`` is unusable.
        ConfigError: ``schema`` is not a pydantic model with a ``request_id`` field.
    """
    if schema is not None:
        return check_schema(load_handler(schema))  # load_handler resolves any module:attr
    if handler is None:
        return Request
    try:
        return request_schema_of(load_handler(handler)) or Request
    except HandlerLoadError:
        raise
    except ConfigError as exc:
        raise HandlerLoadError(str(exc)) from exc


def record(request: Any, ctx: HandlerContext) -> None:
    """Accept the request: the worker records its success in the store."""


def noop(request: Any, ctx: HandlerContext) -> None:
    """Do nothing; for benchmarks."""
