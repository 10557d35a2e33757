"""docs/requests.md stays true: its examples pass the gates they are shown for."""

from __future__ import annotations

import json
import re
from pathlib import Path

from steadyq.content import ContentRequest
from steadyq.gate import Gate, Rejection, Request

DOC = Path(__file__).parents[2] / "docs" / "requests.md"


def examples() -> list[dict[str, object]]:
    blocks = re.findall(r"```json\n(.*?)```", DOC.read_text(encoding="utf-8"), re.DOTALL)
    return [json.loads(block) for block in blocks]


def test_every_example_is_a_valid_request_and_each_modality_is_shown() -> None:
    found = examples()
    assert len(found) == 5
    default, *content = found
    assert isinstance(Gate().check(json.dumps(default).encode()), Request)
    shapes = set()
    for example in content:
        checked = Gate(ContentRequest).check(json.dumps(example).encode())
        assert not isinstance(checked, Rejection), (example, checked)
        assert isinstance(checked, ContentRequest)
        shapes.add(tuple(example.get("modalities", ("absent",))))  # type: ignore[arg-type]
    assert shapes == {("text",), ("video",), ("text", "video"), ("absent",)}


def test_the_field_table_names_every_field_of_the_model() -> None:
    text = DOC.read_text(encoding="utf-8")
    for name in ContentRequest.model_fields:
        assert f"| `{name}` |" in text, name
