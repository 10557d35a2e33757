"""The reference workload: content requests (the incident's worker).

It plugs into the core as any workload would: ``handle`` brings its request model
(``handle.request_schema = ContentRequest``), and the model names what the request
ledger shows (``ContentRequest.ledger_fields``). Run it with
``steadyq worker --handler steadyq.content:handle``.

Rendering needs Pillow and PyAV, the ``steadyq[content]`` extra: importing this
package checks for them, so a worker without them fails at start with the command
that installs them rather than on its first request.
"""

from __future__ import annotations

import importlib.util
from typing import Any

from steadyq.content.schema import ContentRequest, Modality
from steadyq.handlers import with_schema

__all__ = ["ContentRequest", "Modality", "handle"]

_NEEDS = {"PIL": "Pillow", "av": "PyAV"}
_missing = [name for module, name in _NEEDS.items() if importlib.util.find_spec(module) is None]
if _missing:
    raise ImportError(
        f"the content workload needs {' and '.join(_missing)}: pip install 'steadyq[content]'"
    )


@with_schema(ContentRequest)
def handle(request: ContentRequest, ctx: Any) -> dict[str, Any]:
    """The content handler (``--handler steadyq.content:handle``); see ``handler.py``."""
    # imported here so that loading the handler in the worker stays quick
    from steadyq.content.handler import handle as _handle

    return _handle(request, ctx)
