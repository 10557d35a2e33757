from __future__ import annotations

import hashlib
import json
import uuid
from pathlib import Path

import pytest

from steadyq import RetryPolicy, Worker, WorkerOptions
from steadyq.brokers import open_queue, store_for

pytest.importorskip("av")


def body(topic: str, modalities: list[str] | None = None) -> tuple[str, bytes]:
    rid = str(uuid.uuid4())
    data: dict[str, object] = {"request_id": rid, "topic": topic, "interests": ["music"]}
    if modalities is not None:
        data["modalities"] = modalities
    return rid, json.dumps(data).encode()


def test_content_worker_writes_complete_artifacts(tmp_path: Path) -> None:
    queue = open_queue(f"sqlite:///{tmp_path}/c.db")
    text_id, text_body = body("fractions", ["text"])
    dual_id, dual_body = body("photosynthesis", ["text", "video"])
    refused_id, refused_body = body("12345")
    queue.publish_batch([(text_body, None), (dual_body, None), (refused_body, None)])
    artifacts = tmp_path / "artifacts"
    options = WorkerOptions(
        handler="steadyq.content:handle",
        runner="inline",
        drain=True,
        retry=RetryPolicy(0, 0, 2),
        artifacts_dir=str(artifacts),
    )
    result = Worker(queue, store_for(queue), options).run()
    assert (result.counts["succeeded"], result.counts["dead_lettered"]) == (2, 1)

    text_dir = artifacts / text_id
    assert sorted(p.name for p in text_dir.iterdir()) == ["lesson.md", "manifest.json"]
    manifest = json.loads((text_dir / "manifest.json").read_text())
    assert manifest["modalities"] == ["text"]
    entry = manifest["files"]["text"]
    data = (text_dir / "lesson.md").read_bytes()
    assert entry["sha256"] == hashlib.sha256(data).hexdigest() and entry["bytes"] == len(data)
    assert data.startswith(b"# ")

    dual_dir = artifacts / dual_id
    assert sorted(p.name for p in dual_dir.iterdir()) == [
        "lesson.md",
        "lesson.mp4",
        "manifest.json",
    ]
    video = json.loads((dual_dir / "manifest.json").read_text())["files"]["video"]
    assert video["duration_s"] > 10 and video["bytes"] == (dual_dir / "lesson.mp4").stat().st_size

    [letter] = queue.dlq_list()
    assert (letter.reason, letter.request_id) == ("topic_refused", refused_id)
    assert not (artifacts / refused_id / "manifest.json").exists()


def test_leftover_temp_files_of_a_killed_attempt_are_swept(tmp_path: Path) -> None:
    from steadyq.content.handler import handle
    from steadyq.content.schema import ContentRequest
    from steadyq.runner import HandlerContext

    rid = str(uuid.uuid4())
    folder = tmp_path / rid
    folder.mkdir()
    (folder / ".lesson.mp4.abc.part").write_bytes(b"half a video")
    request = ContentRequest(request_id=rid, topic="fractions", modalities=("text",))
    ctx = HandlerContext(
        attempt=2,
        deadline_at=0,
        execution_id="e",
        message_id="m",
        request_id=rid,
        attributes={},
        logger=__import__("logging").getLogger("t"),
        artifacts_dir=tmp_path,
    )
    manifest = handle(request, ctx)
    assert manifest["attempt"] == 2
    assert sorted(p.name for p in folder.iterdir()) == ["lesson.md", "manifest.json"]


def test_naming_the_handler_is_all_it_takes(tmp_path: Path) -> None:
    """`steadyq worker --handler steadyq.content:handle`: the handler brings ContentRequest,
    a legacy request (no modalities) still means video, and the ledger shows both."""
    from typer.testing import CliRunner

    from steadyq.cli import app

    url = f"sqlite:///{tmp_path}/only.db"
    legacy_id, legacy = body("fractions")
    audio_id, audio = body("fractions", ["audio"])
    with open_queue(url) as queue:
        queue.publish_batch([(legacy, None), (audio, None)])
    result = CliRunner().invoke(
        app,
        [
            *("worker", "--url", url, "--handler", "steadyq.content:handle", "--drain"),
            *("--runner", "inline", "--log-format", "none", "--artifacts", str(tmp_path / "a")),
        ],
    )
    assert result.exit_code == 0, result.output
    with open_queue(url) as queue:
        rows = {r.request_id: r for r in store_for(queue).requests()}
        [letter] = queue.dlq_list()
    row = rows[legacy_id]
    assert row.status == "completed" and rows[audio_id].status == "failed"
    assert row.fields is not None and row.fields["modalities"] == ["video"]
    assert Path(row.fields["artifacts"]["video"]).name == "lesson.mp4"
    assert letter.reason == "schema_invalid" and "modalities" in letter.detail
