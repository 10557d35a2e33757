"""The slide video: a real, playable MP4 of the right length, written atomically."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest

av = pytest.importorskip("av")
pytest.importorskip("PIL")

from PIL import Image  # noqa: E402

from steadyq.content import video  # noqa: E402
from steadyq.content.text import Lesson  # noqa: E402

SECONDS = 3.0
FPS = 24


def lesson(sections: int = 4) -> Lesson:
    return Lesson(
        title="Fractions, Seen Through Soccer",
        hook="If you enjoy soccer, you already use some of the thinking behind fractions.",
        sections=[
            (f"Part {i}: a heading", "Some words about fractions and soccer. " * (3 + i))
            for i in range(1, sections + 1)
        ],
        worked_example="1. **Look.** Describe one scene.\n2. **Check.** Read it back.",
        questions=[
            ("What is the key idea of fractions?", "A part of a whole."),
            ("Where could you notice fractions in soccer?", "Halves of the match."),
            ("Why is it useful to know about fractions?", "Sharing, measuring, scoring."),
        ],
    )


@dataclass
class Probe:
    duration: float
    frames: int
    sizes: set[tuple[int, int]]
    codec: str


def probe(path: Path) -> Probe:
    """Decode every frame of ``path`` and report what a player would see."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        assert stream.duration is not None and stream.time_base is not None
        seen = Probe(float(stream.duration * stream.time_base), 0, set(), stream.codec_context.name)
        for frame in container.decode(stream):
            seen.frames += 1
            seen.sizes.add((frame.width, frame.height))
    return seen


def check_video(path: Path, info: video.VideoInfo, slides: int) -> None:
    expected = slides * SECONDS
    assert path.is_file()
    assert info.bytes == path.stat().st_size <= 3 * 1024 * 1024
    assert abs(info.duration_s - expected) <= 0.5
    assert abs(info.frames - expected * FPS) <= 2
    seen = probe(path)
    assert abs(seen.duration - expected) <= 0.5
    assert abs(seen.frames - expected * FPS) <= 2
    assert seen.frames == info.frames  # every frame decodes
    assert seen.sizes == {(640, 360)}
    assert seen.codec == info.codec
    assert not [p for p in path.parent.iterdir() if p.name.endswith(".part")]


def test_deck_is_title_sections_closing() -> None:
    slides = video.slides_for(lesson(4))
    assert [s.kind for s in slides] == ["title"] + ["section"] * 4 + ["closing"]
    assert slides[0].heading == "Fractions, Seen Through Soccer"
    assert "What is the key idea of fractions?" in slides[-1].body


def test_render_plays_back_with_the_right_shape(tmp_path: Path) -> None:
    target = tmp_path / "lesson.mp4"
    info = video.render_video(lesson(4), target)
    assert (info.width, info.height) == (640, 360)
    try:
        av.codec.Codec("libx264", "w")
    except ValueError:
        assert info.codec == "mpeg4"
    else:
        assert info.codec == "h264"
    check_video(target, info, slides=6)


def test_mpeg4_fallback(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(video, "_ENCODERS", (video._MPEG4,))
    target = tmp_path / "fallback.mp4"
    info = video.render_video(lesson(3), target)
    assert info.codec == "mpeg4"
    check_video(target, info, slides=5)


def test_generated_lesson_renders(tmp_path: Path) -> None:
    import uuid

    from steadyq.content.schema import ContentRequest
    from steadyq.content.text import TemplateTextGenerator

    req = ContentRequest(
        request_id=str(uuid.UUID(int=42)), topic="the water cycle", interests=("drawing",)
    )
    generated = TemplateTextGenerator().generate(req)
    info = video.render_video(generated, tmp_path / "generated.mp4")
    check_video(tmp_path / "generated.mp4", info, slides=len(generated.sections) + 2)


def test_frame_rate_and_slide_length_are_honoured(tmp_path: Path) -> None:
    target = tmp_path / "short.mp4"
    info = video.render_video(
        lesson(1), target, width=320, height=180, fps=10, seconds_per_slide=1.5
    )
    assert info.frames == 3 * 15 and info.duration_s == pytest.approx(4.5)
    with av.open(str(target)) as container:
        stream = container.streams.video[0]
        assert stream.average_rate == Fraction(10)
        assert (stream.codec_context.width, stream.codec_context.height) == (320, 180)
        assert sum(1 for _ in container.decode(stream)) == 45


def test_overlong_text_is_shrunk_and_cut_not_spilled() -> None:
    slide = video.Slide("section", "A very long heading " * 10, "word " * 2000)
    image = video.draw_slide(slide, number=2, total=6, width=640, height=360)
    assert image.size == (640, 360) and image.mode == "RGB"
    huge = video.Slide("title", "Pneumonoultramicroscopicsilicovolcanoconiosis" * 4, "x")
    assert video.draw_slide(huge, number=1, total=6, width=640, height=360).size == (640, 360)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"width": 641},
        {"height": 8},
        {"fps": 0},
        {"seconds_per_slide": 0.0},
        {"seconds_per_slide": float("nan")},
    ],
)
def test_bad_settings_are_rejected_before_any_file(tmp_path: Path, kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        video.render_video(lesson(1), tmp_path / "bad.mp4", **kwargs)
    assert list(tmp_path.iterdir()) == []


def _fail_after(calls: int) -> Callable[[Image.Image, Image.Image, float], Image.Image]:
    """A stand-in for video._blend that raises once ``calls`` transition frames are made."""
    real = video._blend
    count = {"n": 0}

    def blend(a: Image.Image, b: Image.Image, alpha: float) -> Image.Image:
        count["n"] += 1
        if count["n"] > calls:
            raise RuntimeError("disk on fire")
        return real(a, b, alpha)

    return blend


def test_failure_mid_render_leaves_no_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(video, "_blend", _fail_after(20))  # well into the second slide
    target = tmp_path / "lesson.mp4"
    with pytest.raises(RuntimeError, match="disk on fire"):
        video.render_video(lesson(4), target)
    assert not target.exists()
    assert list(tmp_path.iterdir()) == []  # the temporary file is gone too


def test_failure_keeps_the_previous_video(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "lesson.mp4"
    first = video.render_video(lesson(2), target)
    before = target.read_bytes()
    monkeypatch.setattr(video, "_blend", _fail_after(30))
    with pytest.raises(RuntimeError):
        video.render_video(lesson(4), target)
    assert target.read_bytes() == before and len(before) == first.bytes
    assert [p.name for p in tmp_path.iterdir()] == ["lesson.mp4"]


def test_killed_render_leaves_nothing_at_the_target(tmp_path: Path) -> None:
    target = tmp_path / "killed.mp4"
    script = textwrap.dedent(
        f"""
        from steadyq.content import video
        from steadyq.content.text import Lesson
        lesson = Lesson("Title", "Hook", [("H", "Body")] * 3, "Example", [])
        video.render_video(lesson, {str(target)!r}, seconds_per_slide=600.0)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", script])
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            parts = [p for p in tmp_path.iterdir() if p.name.endswith(".part")]
            if parts and parts[0].stat().st_size > 0:
                break
            assert proc.poll() is None, "the render ended before it could be killed"
            time.sleep(0.05)
        else:
            pytest.fail("no partial file appeared")
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
    assert not target.exists()
