"""The content handler: a request in, a lesson as Markdown and/or MP4 out.

Files land under ``ctx.artifacts_dir / REQUEST_ID/``: ``lesson.md`` (text),
``lesson.mp4`` (video) and ``manifest.json``. Each is written to a temp file and
renamed into place, and the manifest is written last: a folder without a
manifest is an attempt that did not finish, and the next attempt rewrites it.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any

from steadyq._files import write_atomic
from steadyq.content.schema import ContentRequest
from steadyq.content.text import TemplateTextGenerator, TextGenerator
from steadyq.runner import HandlerContext

MANIFEST_VERSION = 1

_default_generator: TextGenerator = TemplateTextGenerator()


def _file_entry(path: Path) -> dict[str, Any]:
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    return {"path": path.name, "bytes": path.stat().st_size, "sha256": digest}


def _sweep_leftovers(folder: Path) -> None:
    # a killed attempt can leave its temp files; they are never complete
    for stale in folder.glob(".*.part"):
        stale.unlink(missing_ok=True)


def handle(
    request: ContentRequest,
    ctx: HandlerContext,
    *,
    generator: TextGenerator | None = None,
) -> dict[str, Any]:
    """Produce the requested modalities; return the manifest plus ``artifacts``.

    ``artifacts`` maps each produced file (``text``, ``video``, ``manifest``) to its
    path; ``ledger`` (``modalities`` produced and ``artifacts``) is what the request
    ledger shows for the completed request.

    Raises:
        PermanentError: the text generator refuses the topic (``topic_refused``).
        OSError: the disk is full or unwritable (retried by the worker).
    """
    started = time.perf_counter()
    gen = generator or _default_generator
    folder = Path(ctx.artifacts_dir) / request.request_id
    folder.mkdir(parents=True, exist_ok=True)
    _sweep_leftovers(folder)
    lesson = gen.generate(request)
    files: dict[str, Any] = {}
    manifest: dict[str, Any] = {
        "manifest_version": MANIFEST_VERSION,
        "request": request.model_dump(mode="json"),
        "modalities": list(request.modalities),
        "attempt": ctx.attempt,
        "execution_id": ctx.execution_id,
        "generators": {"text": f"{gen.name}/{gen.version}"},
        "files": files,
    }
    if "text" in request.modalities:
        md = folder / "lesson.md"
        write_atomic(md, lesson.markdown.encode("utf-8"))
        files["text"] = _file_entry(md)
    if "video" in request.modalities:
        import av

        from steadyq.content.video import render_video

        mp4 = folder / "lesson.mp4"
        info = render_video(lesson, mp4)
        files["video"] = {
            **_file_entry(mp4),
            "duration_s": info.duration_s,
            "frames": info.frames,
            "width": info.width,
            "height": info.height,
            "codec": info.codec,
        }
        manifest["generators"]["video"] = f"pyav/{av.__version__}"
    manifest["duration_s"] = round(time.perf_counter() - started, 3)
    write_atomic(
        folder / "manifest.json",
        (json.dumps(manifest, indent=2, ensure_ascii=True) + "\n").encode("ascii"),
    )
    artifacts = {kind: str(folder / entry["path"]) for kind, entry in files.items()}
    artifacts["manifest"] = str(folder / "manifest.json")
    ledger = {"modalities": list(request.modalities), "artifacts": artifacts}
    return {**manifest, "artifacts": artifacts, "ledger": ledger}
