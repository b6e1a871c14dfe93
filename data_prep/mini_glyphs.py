"""Omniglot-like characters rendered from the fonts matplotlib ships.

Classes are characters, superclasses are scripts (Unicode blocks). Each image
draws a font that has every character of its script, and a random affine
jitter (rotation, scale, shift) and stroke width, then is rendered black on
white and downsampled, like Omniglot's drawings.
"""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from fewshot_bench.errors import DataError


@dataclasses.dataclass(frozen=True)
class Script:
    """One superclass: a script or Unicode block and its characters (one class each)."""

    name: str
    chars: str


# Characters that look alike across scripts (Latin o / Greek omicron / Cyrillic o, ...)
# are left out, so no two classes share a glyph.
SCRIPTS: dict[str, tuple[Script, ...]] = {
    "TRAIN": (
        Script("latin_upper", "ABCDEFGHJKLMNPQRTUVY"),
        Script("latin_lower", "abcdefghjkmnpqrtuwyz"),
        Script("digits", "0123456789"),
        Script("cyrillic", "БДЖЗИЙЛЦЧШЩЪЫЬЭЮЯ"),
        Script("armenian", "ԱԲԳԴԵԶԷԸԹԺԻԼԽԾԿՀՁՂՃՄ"),
        Script("arrows", "←↑→↓↔↕↖↗↘↙"),
    ),
    "VALID": (
        Script("greek_upper", "ΓΔΘΛΞΠΣΦΨΩ"),
        Script("georgian", "აბგდევზთიკლმნოპჟრსტუ"),
    ),
    "TEST": (
        Script("greek_lower", "αβγδεζηθκλμξπρστφχψω"),
        Script("hebrew", "אבגדהוזחטיכלמנסעפצקרשת"),
        Script("math", "∀∂∃∅∇∈∋∏∑√∞∠∧∨∩∪∫≈≠≡"),
    ),
}

FONT_FILES = (
    "DejaVuSans.ttf", "DejaVuSans-Bold.ttf", "DejaVuSans-Oblique.ttf", "DejaVuSans-BoldOblique.ttf",
    "DejaVuSerif.ttf", "DejaVuSerif-Bold.ttf", "DejaVuSerif-Italic.ttf", "DejaVuSerif-BoldItalic.ttf",
    "DejaVuSansMono.ttf", "DejaVuSansMono-Bold.ttf", "DejaVuSansMono-Oblique.ttf",
    "DejaVuSansMono-BoldOblique.ttf", "STIXGeneral.ttf", "STIXGeneralBol.ttf",
    "STIXGeneralItalic.ttf", "STIXGeneralBolIta.ttf", "cmr10.ttf", "cmss10.ttf", "cmtt10.ttf",
    "cmb10.ttf", "cmti10.ttf",
)
_SCALE = 3  # render at 3x the output side, then downsample (antialiasing)


def font_dir() -> Path:
    import matplotlib
    return Path(matplotlib.get_data_path()) / "fonts" / "ttf"


@functools.lru_cache(maxsize=None)
def _codepoints(font_file: str) -> frozenset[int]:
    from fontTools.ttLib import TTFont
    return frozenset(TTFont(font_dir() / font_file, lazy=True).getBestCmap())


def fonts_for(chars: str) -> tuple[str, ...]:
    """The font files (of FONT_FILES) that have a glyph for every character in ``chars``."""
    return tuple(f for f in FONT_FILES if all(ord(c) in _codepoints(f) for c in chars))


@functools.lru_cache(maxsize=None)
def _font(font_file: str, size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(str(font_dir() / font_file), size)


def render(char: str, font_file: str, rng: np.random.Generator, side: int = 28) -> np.ndarray:
    """One jittered drawing of ``char``: uint8 side x side, black ink on white."""
    big = side * _SCALE
    scale = rng.uniform(0.8, 1.1)
    angle = rng.uniform(-15.0, 15.0)
    shift = rng.uniform(-2.0, 2.0, size=2) * _SCALE
    stroke = int(rng.integers(0, 3))
    font = _font(font_file, int(round(0.62 * big * scale)))
    canvas = Image.new("L", (2 * big, 2 * big), 255)
    ImageDraw.Draw(canvas).text((big, big), char, font=font, fill=0, anchor="mm",
                                stroke_width=stroke, stroke_fill=0)
    ink = np.asarray(canvas) < 128
    rows, cols = np.nonzero(ink)
    if len(rows) == 0:
        raise DataError(f"mini_fonts: font {font_dir() / font_file} renders no ink for U+{ord(char):04X}; "
                        f"drop that character from mini_glyphs.SCRIPTS or the font from FONT_FILES")
    cx, cy = (cols.min() + cols.max()) / 2.0, (rows.min() + rows.max()) / 2.0
    # One affine map from output pixels back into the canvas: the ink centre
    # lands at the (shifted) output centre, rotated by ``angle`` degrees.
    ox, oy = big / 2.0 + shift[0], big / 2.0 + shift[1]
    theta = -np.deg2rad(angle)
    a, b, d, e = np.cos(theta), np.sin(theta), -np.sin(theta), np.cos(theta)
    matrix = (a, b, cx - a * ox - b * oy, d, e, cy - d * ox - e * oy)
    drawing = canvas.transform((big, big), Image.Transform.AFFINE, tuple(float(m) for m in matrix),
                               resample=Image.Resampling.BILINEAR, fillcolor=255)
    return np.asarray(drawing.resize((side, side), Image.Resampling.BOX), dtype=np.uint8)
