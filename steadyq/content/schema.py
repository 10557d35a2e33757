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

    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        title="ContentRequest",
        json_schema_extra={
            "description": "A request for a personalised lesson as text, video or both"
            " (steadyq.content). Unknown fields are refused unless the worker allows them."
        },
    )

    topic: StrictStr = Field(
        min_length=1, max_length=200, description="What the lesson teaches, e.g. 'fractions'."
    )
    student_id: StrictStr | None = Field(
        default=None,
        min_length=1,
        max_length=200,
        description="Who the lesson is for; kept in the manifest, not used to write it.",
    )
    interests: tuple[Interest, ...] | None = Field(
        default=None,
        max_length=20,
        description="Up to 20 interests (1-60 characters each) the examples draw on.",
    )
    grade_level: StrictInt | None = Field(
        default=None, ge=1, le=12, description="School grade 1-12: sets the reading level."
    )
    modalities: tuple[Modality, ...] = Field(
        default=("video",),
        min_length=1,
        description="What to produce: 'text' (lesson.md), 'video' (lesson.mp4), or both."
        " Absent or null means ['video'] (an 18 s video), as before modalities existed.",
    )

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
