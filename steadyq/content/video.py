"""Lesson video: a slide deck drawn with Pillow and encoded to MP4 with PyAV.

The deck is a title card (title and hook), one slide per lesson section, and a
closing card (the check-your-understanding questions). Every slide is on screen for
``seconds_per_slide``; slides cross-fade into each other and the video fades in from,
and out to, the background colour.

Why it is fast: a slide is drawn once and converted to a ``yuv420p`` frame once. For
the static part of the slide that same frame object is sent to the encoder again
and again with a new ``pts``; only transition frames are blended (``Image.blend``)
and converted. The encoder runs on one thread.

The codec is H.264 (``libx264``, ``veryfast``, CRF 21, ``tune=stillimage``) when
that encoder is available, else MPEG-4 Part 2 (``mpeg4``, constant quantiser 4).
The file is written to a temporary name in the target's folder and moved onto
``path`` with :func:`os.replace` only when complete, so ``path`` never holds a
partial video.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import secrets
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, cast

import av
from av.video.stream import VideoStream
from PIL import Image, ImageDraw

from steadyq.content.fonts import Font, load_font
from steadyq.content.text import Lesson

SlideKind = Literal["title", "section", "closing"]
RGB = tuple[int, int, int]

# fade in/out at the ends, cross-fade between slides (seconds)
_EDGE_FADE_S = 0.25
_CROSSFADE_S = 0.5

# (encoder, codec as the file reports it, encoder options)
_X264 = ("libx264", "h264", {"preset": "veryfast", "crf": "21", "tune": "stillimage"})
# mpeg4 at a constant quantiser of 4 (qmin = qmax): sharp text, static frames nearly free
_MPEG4 = ("mpeg4", "mpeg4", {"qmin": "4", "qmax": "4"})
_ENCODERS: tuple[tuple[str, str, dict[str, str]], ...] = (_X264, _MPEG4)


@dataclass(frozen=True)
class VideoInfo:
    """What :func:`render_video` wrote."""

    duration_s: float
    frames: int
    width: int
    height: int
    bytes: int
    codec: str  # "h264" or "mpeg4"


@dataclass(frozen=True)
class Slide:
    """One card of the deck: what is written on it."""

    kind: SlideKind
    heading: str
    body: str


@dataclass(frozen=True)
class _Palette:
    background: RGB
    text: RGB
    accent: RGB
    muted: RGB


_PALETTES = (
    _Palette((18, 32, 56), (241, 244, 248), (255, 183, 77), (150, 166, 190)),
    _Palette((248, 246, 240), (33, 37, 41), (0, 121, 107), (120, 120, 120)),
    _Palette((30, 30, 36), (236, 236, 240), (102, 187, 255), (140, 140, 155)),
    _Palette((235, 242, 250), (20, 38, 66), (214, 69, 65), (105, 120, 140)),
)


# -- the deck ---------------------------------------------------------------------


def _plain(text: str) -> str:
    """Markdown bold markers removed: slides show the words, not the syntax."""
    return re.sub(r"\*\*(.+?)\*\*", r"\1", text).strip()


def slides_for(lesson: Lesson) -> list[Slide]:
    """The deck for ``lesson``: title card, one slide per section, closing card."""
    slides = [Slide("title", _plain(lesson.title), _plain(lesson.hook))]
    slides += [Slide("section", _plain(h), _plain(b)) for h, b in lesson.sections]
    if lesson.questions:
        listed = "\n".join(
            f"{number}. {_plain(question)}"
            for number, (question, _answer) in enumerate(lesson.questions, start=1)
        )
        slides.append(
            Slide("closing", "Your turn", f"{listed}\nThe answers are in the lesson text.")
        )
    else:
        slides.append(Slide("closing", "Nice work!", "Thanks for watching."))
    return slides


# -- drawing -------------------------------------------------------------------


def _wrap(text: str, font: Font, max_width: float, max_lines: int) -> list[str]:
    """Greedy word wrap; explicit newlines start new lines, long words are split.

    Stops once it has more than ``max_lines`` lines: the caller only needs to know
    that the text overflows, and a runaway body should not cost a full layout.
    """
    lines: list[str] = []
    for paragraph in text.split("\n"):
        if len(lines) > max_lines:
            break
        line = ""
        for word in paragraph.split():
            if len(lines) > max_lines:
                break
            while len(lines) <= max_lines and len(word) > 1 and font.getlength(word) > max_width:
                # a word wider than the box: cut it at the longest prefix that fits
                low, high = 1, len(word) - 1
                while low < high:
                    middle = (low + high + 1) // 2
                    if font.getlength(word[:middle]) <= max_width:
                        low = middle
                    else:
                        high = middle - 1
                cut = low
                if line:
                    lines.append(line)
                    line = ""
                lines.append(word[:cut])
                word = word[cut:]
            candidate = f"{line} {word}" if line else word
            if font.getlength(candidate) <= max_width:
                line = candidate
            else:
                lines.append(line)
                line = word
        lines.append(line)
    return lines


def _line_height(size: int) -> int:
    return math.ceil(size * 1.3)


def _fit(
    text: str, *, bold: bool, size: int, min_size: int, box: tuple[float, float]
) -> tuple[Font, int, list[str]]:
    """The largest font size (down to ``min_size``) at which ``text`` fits ``box``.

    If even ``min_size`` overflows, the text is cut at the last line that fits and
    ends with an ellipsis.
    """
    width, height = box
    size = max(size, min_size)
    while True:
        font = load_font(size, bold=bold)
        room = max(1, int(height // _line_height(size)))
        lines = _wrap(text, font, width, room)
        if len(lines) <= room or size <= min_size:
            break
        size -= 1
    if len(lines) > room:
        lines = lines[:room]
        last = lines[-1]
        while last and font.getlength(last + " …") > width:
            last = last[:-1]
        lines[-1] = (last.rstrip() + " …").strip()
    return font, size, lines


def _draw_lines(
    draw: ImageDraw.ImageDraw,
    lines: Sequence[str],
    font: Font,
    size: int,
    *,
    left: float,
    top: float,
    fill: RGB,
    center_width: float | None = None,
) -> float:
    """Draw ``lines`` from ``top``; centred in ``center_width`` if given. Returns the bottom."""
    y = top
    for line in lines:
        x = left
        if center_width is not None:
            x = left + (center_width - font.getlength(line)) / 2
        draw.text((x, y), line, font=font, fill=fill)
        y += _line_height(size)
    return y


def _palette_for(key: str) -> _Palette:
    return _PALETTES[zlib.crc32(key.encode("utf-8")) % len(_PALETTES)]


def draw_slide(
    slide: Slide, *, number: int, total: int, width: int, height: int, palette_key: str = ""
) -> Image.Image:
    """One slide as an RGB image of ``width`` × ``height``."""
    palette = _palette_for(palette_key)
    scale = min(width / 640, height / 360)
    margin = max(8, round(32 * scale))
    image = Image.new("RGB", (width, height), palette.background)
    draw = ImageDraw.Draw(image)
    inner = width - 2 * margin

    if slide.kind != "title":
        bar = max(3, round(8 * scale))
        draw.rectangle((0, 0, bar - 1, height), fill=palette.accent)
        footer_size = max(8, round(13 * scale))
        footer_font = load_font(footer_size)
        footer_y = height - margin // 2 - _line_height(footer_size)
        footer = f"{number} / {total}"
        draw.text(
            (width - margin - footer_font.getlength(footer), footer_y),
            footer,
            font=footer_font,
            fill=palette.muted,
        )
        head_font, head_size, head_lines = _fit(
            slide.heading,
            bold=True,
            size=round(28 * scale),
            min_size=max(8, round(18 * scale)),
            box=(inner, 2 * _line_height(round(28 * scale))),
        )
        y = _draw_lines(
            draw, head_lines, head_font, head_size, left=margin, top=margin, fill=palette.text
        )
        rule_y = y + round(6 * scale)
        draw.rectangle(
            (margin, rule_y, margin + round(64 * scale), rule_y + max(2, round(3 * scale))),
            fill=palette.accent,
        )
        body_top = rule_y + round(18 * scale)
        body_font, body_size, body_lines = _fit(
            slide.body,
            bold=False,
            size=round(21 * scale),
            min_size=max(8, round(13 * scale)),
            box=(inner, footer_y - body_top - round(4 * scale)),
        )
        _draw_lines(
            draw, body_lines, body_font, body_size, left=margin, top=body_top, fill=palette.text
        )
        return image

    # the title card: a centred text block
    head_size = round(34 * scale)
    head_font, head_size, head_lines = _fit(
        slide.heading,
        bold=True,
        size=head_size,
        min_size=max(8, round(20 * scale)),
        box=(inner, 3 * _line_height(head_size)),
    )
    body_font, body_size, body_lines = _fit(
        slide.body,
        bold=False,
        size=round(20 * scale),
        min_size=max(8, round(12 * scale)),
        box=(inner, height - 2 * margin - len(head_lines) * _line_height(head_size) - 24 * scale),
    )
    gap = round(20 * scale)
    block = (
        len(head_lines) * _line_height(head_size) + gap + len(body_lines) * _line_height(body_size)
    )
    top = max(margin, (height - block) / 2)
    y = _draw_lines(
        draw,
        head_lines,
        head_font,
        head_size,
        left=margin,
        top=top,
        fill=palette.text,
        center_width=inner,
    )
    rule_w = round(80 * scale)
    rule_y = y + gap / 2 - max(1, round(1.5 * scale))
    draw.rectangle(
        ((width - rule_w) / 2, rule_y, (width + rule_w) / 2, rule_y + max(2, round(3 * scale))),
        fill=palette.accent,
    )
    _draw_lines(
        draw,
        body_lines,
        body_font,
        body_size,
        left=margin,
        top=y + gap,
        fill=palette.text,
        center_width=inner,
    )
    return image


# -- the timeline -------------------------------------------------------------------


@dataclass(frozen=True)
class _Span:
    """Frames ``[start, end)`` belong to slide ``index``; the first ``fade_in`` frames
    blend in from ``previous`` (an image index, or -1 for the background) and the last
    ``fade_out`` frames blend out to the background (last slide only)."""

    index: int
    start: int
    end: int
    fade_in: int
    previous: int
    fade_out: int


def _timeline(slides: int, fps: int, seconds_per_slide: float) -> list[_Span]:
    per_slide = seconds_per_slide * fps
    bounds = [round(i * per_slide) for i in range(slides + 1)]
    spans = []
    for i in range(slides):
        length = bounds[i + 1] - bounds[i]
        fade_out = min(round(_EDGE_FADE_S * fps), length // 4) if i == slides - 1 else 0
        if i == 0:
            fade_in = min(round(_EDGE_FADE_S * fps), length // 4)
        else:
            fade_in = min(round(_CROSSFADE_S * fps), length // 3)
        spans.append(_Span(i, bounds[i], bounds[i + 1], fade_in, i - 1, fade_out))
    return spans


# PyAV's stub leaves ``from_image`` untyped
_from_image = cast(Callable[[Image.Image], av.VideoFrame], av.VideoFrame.from_image)


def _to_frame(image: Image.Image) -> av.VideoFrame:
    rgb = _from_image(image)
    return rgb.reformat(format="yuv420p", threads=1)


def _blend(a: Image.Image, b: Image.Image, alpha: float) -> Image.Image:
    return Image.blend(a, b, alpha)


def _frames(
    images: Sequence[Image.Image], spans: Sequence[_Span], background_colour: RGB
) -> Iterator[av.VideoFrame]:
    """Every frame of the video, in order; static frames are the same object repeated."""
    background = Image.new("RGB", images[0].size, background_colour)
    for span in spans:
        image = images[span.index]
        static = _to_frame(image)
        before = background if span.previous < 0 else images[span.previous]
        length = span.end - span.start
        for offset in range(length):
            if offset < span.fade_in:
                alpha = (offset + 1) / (span.fade_in + 1)
                yield _to_frame(_blend(before, image, alpha))
            elif offset >= length - span.fade_out:
                step = offset - (length - span.fade_out) + 1
                yield _to_frame(_blend(image, background, step / (span.fade_out + 1)))
            else:
                yield static


# -- encoding ----------------------------------------------------------------------


def _pick_encoder() -> tuple[str, str, dict[str, str]]:
    for encoder, codec, options in _ENCODERS:
        try:
            av.codec.Codec(encoder, "w")
        except ValueError:  # UnknownCodecError: not built into this FFmpeg
            continue
        return encoder, codec, dict(options)
    raise RuntimeError("neither libx264 nor mpeg4 is available in this PyAV build")


def _encode(
    temp: Path, frames: Iterator[av.VideoFrame], *, width: int, height: int, fps: int
) -> tuple[int, str]:
    encoder, codec, options = _pick_encoder()
    count = 0
    with av.open(
        str(temp), "w", format="mp4", container_options={"movflags": "+faststart"}
    ) as container:
        stream = container.add_stream(encoder, rate=fps)
        if not isinstance(stream, VideoStream):  # pragma: no cover - PyAV contract
            raise TypeError(f"{encoder} did not give a video stream")
        stream.width = width
        stream.height = height
        stream.pix_fmt = "yuv420p"
        context = stream.codec_context
        context.thread_count = 1  # the budget is one core
        context.thread_type = "SLICE"
        if encoder == "mpeg4":
            context.gop_size = fps * 10  # its default (12) would spend a keyframe each 0.5 s
        stream.options = dict[str, object](options)
        for frame in frames:
            frame.pts = count
            container.mux(stream.encode(frame))
            count += 1
        container.mux(stream.encode(None))
    return count, codec


def _check(width: int, height: int, fps: int, seconds_per_slide: float) -> None:
    for name, value in (("width", width), ("height", height)):
        if not 16 <= value <= 4096 or value % 2:
            raise ValueError(f"{name} must be an even number from 16 to 4096, got {value}")
    if not 1 <= fps <= 120:
        raise ValueError(f"fps must be from 1 to 120, got {fps}")
    if not (math.isfinite(seconds_per_slide) and seconds_per_slide * fps >= 4):
        raise ValueError(
            f"seconds_per_slide must give at least 4 frames a slide, got {seconds_per_slide}"
        )


def render_video(
    lesson: Lesson,
    path: str | os.PathLike[str],
    *,
    width: int = 640,
    height: int = 360,
    fps: int = 24,
    seconds_per_slide: float = 3.0,
) -> VideoInfo:
    """Render ``lesson`` as an MP4 slide video at ``path`` (replaced atomically)."""
    _check(width, height, fps, seconds_per_slide)
    slides = slides_for(lesson)
    images = [
        draw_slide(
            slide,
            number=number,
            total=len(slides),
            width=width,
            height=height,
            palette_key=lesson.title,
        )
        for number, slide in enumerate(slides, start=1)
    ]
    spans = _timeline(len(slides), fps, seconds_per_slide)

    target = Path(path)
    temp = target.with_name(f".{target.name}.{secrets.token_hex(4)}.part")
    # created here (not by the muxer) so that the mode honours the umask like a normal file
    os.close(os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    try:
        frames, codec = _encode(
            temp,
            _frames(images, spans, _palette_for(lesson.title).background),
            width=width,
            height=height,
            fps=fps,
        )
        fd = os.open(temp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        size = temp.stat().st_size
        os.replace(temp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            temp.unlink()
        raise
    return VideoInfo(
        duration_s=frames / fps,
        frames=frames,
        width=width,
        height=height,
        bytes=size,
        codec=codec,
    )


__all__ = ["Slide", "VideoInfo", "draw_slide", "render_video", "slides_for"]
