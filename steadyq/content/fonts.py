"""Fonts for the lesson video: DejaVu Sans when the system has it, else Pillow's own.

DejaVu is looked for in the usual Linux locations; ``STEADYQ_FONT_DIR`` (a folder
holding ``DejaVuSans.ttf`` and ``DejaVuSans-Bold.ttf``) is searched first. When no
file is found, :func:`load_font` falls back to ``ImageFont.load_default(size=...)``,
which is a scalable font whenever Pillow was built with FreeType.

Loaded fonts are cached per (size, weight): a slide deck asks for the same two or
three sizes over and over.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

from PIL import ImageFont

Font = ImageFont.FreeTypeFont | ImageFont.ImageFont

_FONT_DIRS = (
    "/usr/share/fonts/truetype/dejavu",
    "/usr/share/fonts/dejavu",
    "/usr/share/fonts/TTF",
    "/usr/local/share/fonts",
)
_REGULAR = "DejaVuSans.ttf"
_BOLD = "DejaVuSans-Bold.ttf"


@lru_cache(maxsize=4)
def font_file(*, bold: bool = False) -> Path | None:
    """The DejaVu Sans file to use (bold or regular), or None when there is none."""
    wanted = _BOLD if bold else _REGULAR
    dirs = list(_FONT_DIRS)
    override = os.environ.get("STEADYQ_FONT_DIR")
    if override:
        dirs.insert(0, override)
    for folder in dirs:
        candidate = Path(folder) / wanted
        if candidate.is_file():
            return candidate
    if bold:  # a regular face is better than Pillow's default for headings too
        return font_file(bold=False)
    return None


@lru_cache(maxsize=64)
def load_font(size: int, *, bold: bool = False) -> Font:
    """A font of ``size`` pixels: DejaVu Sans (bold if asked) or Pillow's default."""
    size = max(1, int(size))
    path = font_file(bold=bold)
    if path is not None:
        try:
            return ImageFont.truetype(str(path), size)
        except OSError:  # unreadable or not a font after all: fall through
            pass
    return ImageFont.load_default(size=size)


__all__ = ["Font", "font_file", "load_font"]
