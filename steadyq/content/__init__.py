"""The reference workload: content requests (the incident's worker).

``handle`` is imported lazily so that importing the schema needs neither Pillow nor PyAV.
"""

from typing import Any

from steadyq.content.schema import ContentRequest, Modality

__all__ = ["ContentRequest", "Modality", "handle"]


def handle(request: ContentRequest, ctx: Any) -> dict[str, Any]:
    """The content handler (``--handler steadyq.content:handle``); see ``handler.py``."""
    from steadyq.content.handler import handle as _handle

    return _handle(request, ctx)
