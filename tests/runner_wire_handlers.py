"""Request models and a handler for tests/test_runner_wire.py: importable by name in a
handler child, as the classes of pickled requests must be."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, PrivateAttr

from steadyq.runner import HandlerContext


class Plain(BaseModel):
    request_id: str
    topic: str = "fractions"
    tags: tuple[str, ...] = ()


class Open(BaseModel):
    model_config = ConfigDict(extra="allow")
    request_id: str


class Secretive(BaseModel):
    request_id: str
    _seen: int = PrivateAttr(default=0)


class OwnPickle(BaseModel):
    request_id: str

    def __getstate__(self) -> dict[Any, Any]:
        state = super().__getstate__()
        state["__dict__"] = {**state["__dict__"], "request_id": "pickled by its own code"}
        return state


def describe(request: Any, ctx: HandlerContext) -> dict[str, Any]:
    """What the child got: the request as a dict, its class, and for a model what
    pydantic knows of it."""
    if not isinstance(request, BaseModel):
        return {"type": type(request).__name__, "value": list(request)}
    return {
        "type": type(request).__name__,
        "dump": request.model_dump(mode="json"),
        "fields_set": sorted(request.model_fields_set),
        "extra": request.model_extra,
        "private": request.__pydantic_private__,
        "equal": request == type(request).model_validate(request.model_dump()),
    }
