"""The content request: the gate's default schema.

Three shapes the incident team tested must all validate: no ``modalities`` (the
behaviour before modalities existed: video), text only, and explicit video.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr, field_validator

from steadyq.gate import canonical_request_id

Modality = Literal["text", "video"]
Interest = Annotated[StrictStr, Field(min_length=1, max_length=60)]


class ContentRequest(BaseModel):
    """A request for a personalised lesson, as text, video or both."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    request_id: StrictStr
    topic: StrictStr = Field(min_length=1, max_length=200)
    student_id: StrictStr | None = Field(default=None, min_length=1, max_length=200)
    interests: tuple[Interest, ...] | None = Field(default=None, max_length=20)
    grade_level: StrictInt | None = Field(default=None, ge=1, le=12)
    modalities: tuple[Modality, ...] = Field(default=("video",), min_length=1)

    @field_validator("request_id")
    @classmethod
    def _canonical_id(cls, value: str) -> str:
        canonical = canonical_request_id(value)
        if canonical is None:
            raise ValueError("request_id must be a UUID in canonical 8-4-4-4-12 form")
        return canonical

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
