"""Procedural dSprites-style sprites for the ``mini`` suite.

The latent factors and their cardinalities are those of dSprites (Matthey et
al. 2017): 3 shapes (square, ellipse, heart), 6 scales in [0.5, 1], 40
orientations in [0, 2*pi], 32 x and 32 y positions in [0, 1]. Images are 64x64
binary, stored with values 0/1 like the TFDS ``dsprites`` dataset (VTAB
multiplies them by 255).
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

SIDE = 64
SHAPES = ("square", "ellipse", "heart")
CARDINALITIES = {"shape": 3, "scale": 6, "orientation": 40, "x_position": 32, "y_position": 32}
LATENT_VALUES = {
    "shape": np.arange(1.0, 4.0),
    "scale": np.linspace(0.5, 1.0, 6),
    "orientation": np.linspace(0.0, 2.0 * np.pi, 40),
    "x_position": np.linspace(0.0, 1.0, 32),
    "y_position": np.linspace(0.0, 1.0, 32),
}
_RADIUS = 10.0  # half-extent in pixels of a sprite at scale 1
_MARGIN = 13.0  # pixels between the image border and the extreme sprite centres


def _outline(shape: str, points: int = 72) -> np.ndarray:
    """The shape's outline in unit coordinates (x right, y down), about [-1, 1]^2."""
    t = np.linspace(0.0, 2.0 * np.pi, points, endpoint=False)
    if shape == "square":
        return np.array([[-0.8, -0.8], [0.8, -0.8], [0.8, 0.8], [-0.8, 0.8]])
    if shape == "ellipse":
        return np.stack([np.cos(t), 0.5 * np.sin(t)], axis=1)
    x = 16 * np.sin(t) ** 3
    y = -(13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t))
    heart = np.stack([x, y], axis=1)
    heart -= (heart.max(axis=0) + heart.min(axis=0)) / 2.0
    return heart / np.abs(heart).max()


def render(shape: int, scale: int, orientation: int, x_position: int, y_position: int) -> np.ndarray:
    """The 64x64x1 uint8 image (values 0/1) of one latent combination (class indices)."""
    outline = _outline(SHAPES[shape]) * (LATENT_VALUES["scale"][scale] * _RADIUS)
    angle = LATENT_VALUES["orientation"][orientation]
    rotation = np.array([[np.cos(angle), np.sin(angle)], [-np.sin(angle), np.cos(angle)]])
    span = SIDE - 1 - 2 * _MARGIN
    centre = np.array([_MARGIN + span * LATENT_VALUES["x_position"][x_position],
                       _MARGIN + span * LATENT_VALUES["y_position"][y_position]])
    points = outline @ rotation.T + centre
    canvas = Image.new("L", (SIDE, SIDE), 0)
    ImageDraw.Draw(canvas).polygon([(float(px), float(py)) for px, py in points], fill=1)
    return np.asarray(canvas, dtype=np.uint8)[..., None]


def sample_latents(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    """``n`` latent combinations (class indices), each factor drawn uniformly."""
    return {name: rng.integers(0, size, n).astype(np.int64) for name, size in CARDINALITIES.items()}


def latent_value(name: str, index: int) -> float:
    """The dSprites value of a latent class index (shape 1..3, scale 0.5..1, ...)."""
    return float(LATENT_VALUES[name][index])
