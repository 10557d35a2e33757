"""The content request: the schema the content handler brings to the gate.

Three shapes the incident team tested must all validate: no ``modalities`` (the
behaviour before modalities existed: video), text only, and explicit video.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import ConfigDict, Field, StrictInt, StrictStr, field_validator

from steadyq.gate import Request

Modality = Literal["text", "video"]
Interest = Annotated[StrictStr, Field(min_length=1, max_length=60)]


class ContentRequest(Request):
    """A request for a personalised lesson, as text, video or both.

    ``request_id`` and its check come from :class:`steadyq.gate.Request`.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    topic: StrictStr = Field(min_length=1, max_length=200)
    student_id: StrictStr | None = Field(default=None, min_length=1, max_length=200)
    interests: tuple[Interest, ...] | None = Field(default=None, max_length=20)
    grade_level: StrictInt | None = Field(default=None, ge=1, le=12)
    modalities: tuple[Modality, ...] = Field(default=("video",), min_length=1)

    @field_validator("modalities", mode="before")
    @classmethod
    def _absent_means_video(cls, value: object) -> object:
        # null is what some producers send for "not set": same meaning as absent
        return ("video",) if value is None else value

    @field_validator("modalities")
    @classmethod
    def _as_sorted_set(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(sorted(set(value)))

    def ledger_fields(self) -> dict[str, list[str]]:
        """What the request ledger shows while this request is open."""
        return {"modalities": list(self.modalities)}
