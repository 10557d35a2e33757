"""The reference workload: content requests (the incident's worker)."""

from steadyq.content.schema import ContentRequest, Modality

__all__ = ["ContentRequest", "Modality"]
