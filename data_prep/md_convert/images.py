"""What one record of a converted class holds, and how it is encoded (run inside the workers).

Every image is stored as the reference converter stores it: the original bytes
when the file already is an RGB JPEG that needs no crop or inversion, otherwise
the image converted to RGB, cropped / inverted as the source requires, and
re-encoded as JPEG with PIL's default settings (quality 75). The whole image is
decoded first either way, so a truncated or corrupt file raises
:class:`ImageError` (reported and skipped by the class writer) instead of
landing in the records.
"""

from __future__ import annotations

import dataclasses
import functools
import io
from typing import Optional

import numpy as np
from PIL import Image, ImageOps

OUTPUT_FORMAT = "JPEG"


class ImageError(Exception):
    """An image of the raw data that cannot be read, decoded or cropped."""


@dataclasses.dataclass(frozen=True)
class FileImage:
    """An image file; ``box`` = PIL crop box (left, top, right, bottom); ``invert`` = negate (Omniglot)."""

    path: str
    box: Optional[tuple[int, int, int, int]] = None
    invert: bool = False

    def __str__(self) -> str:
        return self.path


@dataclasses.dataclass(frozen=True)
class CocoCrop:
    """One MSCOCO object: its image file and COCO box ``(x, y, width, height)``."""

    path: str
    bbox: tuple[float, float, float, float]
    scale: float = 1.2

    def __str__(self) -> str:
        return f"{self.path} box {list(self.bbox)}"


def _jpeg(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=OUTPUT_FORMAT)
    return buffer.getvalue()


def _open(path: str) -> tuple[bytes, Image.Image]:
    try:
        with open(path, "rb") as f:
            data = f.read()
        image = Image.open(io.BytesIO(data))
        image.load()
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        raise ImageError(f"cannot decode ({type(e).__name__}: {e})") from e
    return data, image


def encode_file(item: FileImage) -> bytes:
    """The record bytes of an image file (original bytes if already an untouched RGB JPEG)."""
    data, image = _open(item.path)
    needs_encoding = image.format != OUTPUT_FORMAT
    if image.mode != "RGB":
        image = image.convert("RGB")
        needs_encoding = True
    if item.box is not None:
        left, top, right, bottom = item.box
        if right <= left or bottom <= top:
            raise ImageError(f"empty crop box {list(item.box)}")
        image = image.crop(item.box)
        needs_encoding = True
    if item.invert:
        image = ImageOps.invert(image)
        needs_encoding = True
    return _jpeg(image) if needs_encoding else data


def coco_crop_box(bbox: tuple[float, float, float, float], image_width: int, image_height: int,
                  scale: float = 1.2) -> tuple[int, int, int, int]:
    """The PIL crop box of a COCO object box enlarged ``scale`` times about its centre.

    Meta-Dataset rule (MSCOCO converter, box scale ratio 1.2): ``(x, y, w, h)``
    grows to ``(x - w(s-1)/2, y - h(s-1)/2, s w, s h)``; COCO coordinates are
    pixel centres at half-integers, so the corners are ``round(x - 0.5)`` and
    ``round(x + w - 0.5) + 1`` (Python's round), clipped to the image.
    """
    x, y, w, h = (float(v) for v in bbox)
    x, y = x - 0.5 * w * (scale - 1.0), y - 0.5 * h * (scale - 1.0)
    w, h = w * scale, h * scale
    left = max(int(round(x - 0.5)), 0)
    top = max(int(round(y - 0.5)), 0)
    right = min(int(round(x + w - 0.5)) + 1, image_width)
    bottom = min(int(round(y + h - 0.5)) + 1, image_height)
    return left, top, right, bottom


def encode_coco_crop(item: CocoCrop) -> bytes:
    """The JPEG of one MSCOCO object crop (:func:`coco_crop_box`)."""
    _, image = _open(item.path)
    image = image.convert("RGB")
    box = coco_crop_box(item.bbox, image.width, image.height, item.scale)
    if box[2] <= box[0] or box[3] <= box[1]:
        raise ImageError(f"the box {list(item.bbox)} leaves an empty crop of the {image.width}x{image.height} image")
    return _jpeg(image.crop(box))


@dataclasses.dataclass(frozen=True)
class NpyRow:
    """Row ``row`` of a Quickdraw ``.npy`` file: one flattened square bitmap."""

    path: str
    row: int

    def __str__(self) -> str:
        return f"{self.path} row {self.row}"


@dataclasses.dataclass(frozen=True)
class NpyRows:
    """Rows ``0 .. count - 1`` of a ``.npy`` file as a sequence of :class:`NpyRow` (no list of 300k objects)."""

    path: str
    count: int

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, row: int) -> NpyRow:
        if not 0 <= row < self.count:
            raise IndexError(row)
        return NpyRow(self.path, row)

    def __iter__(self):
        return (NpyRow(self.path, r) for r in range(self.count))


@functools.lru_cache(maxsize=2)
def _bitmaps(path: str) -> np.ndarray:
    return np.load(path, mmap_mode="r")


def encode_npy_row(item: NpyRow) -> bytes:
    """The JPEG of one Quickdraw bitmap (uint8, or bool scaled to 0/255), converted to RGB."""
    try:
        bitmap = np.asarray(_bitmaps(item.path)[item.row])
    except (OSError, ValueError, IndexError) as e:
        raise ImageError(f"cannot read the bitmap ({e})") from e
    side = int(round(np.sqrt(bitmap.size)))
    if side * side != bitmap.size:
        raise ImageError(f"the row has {bitmap.size} values, not a square bitmap")
    if bitmap.dtype == bool:
        bitmap = bitmap.astype(np.uint8) * 255
    return _jpeg(Image.fromarray(bitmap.astype(np.uint8).reshape(side, side)).convert("RGB"))
