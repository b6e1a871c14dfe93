"""Image generators of the built-in ``mini`` suite, drawn from package-bundled assets.

Every image comes from data that ships inside an installed package (the photos
of ``skimage.data`` that need no download, scikit-learn's handwritten digits
and sample photos), cropped or resized with a seeded generator. Everything here
is a pure function of its arguments: the same seed gives the same pixels.
"""

from __future__ import annotations

import functools
import zlib
from typing import Callable, Sequence

import numpy as np
from PIL import Image

from fewshot_bench.errors import DataError


def rng_for(seed: int, *keys: str | int) -> np.random.Generator:
    """A generator seeded by ``seed`` and a path of names/indices (dataset, split, class...)."""
    words = [seed] + [zlib.crc32(k.encode()) if isinstance(k, str) else k for k in keys]
    return np.random.default_rng(np.random.SeedSequence(words))


def resize(image: np.ndarray, side: int) -> np.ndarray:
    """Resize a uint8 HxW or HxWxC image to side x side (antialiased bilinear)."""
    squeeze = image.ndim == 3 and image.shape[2] == 1
    pil = Image.fromarray(image[..., 0] if squeeze else image)
    out = np.asarray(pil.resize((side, side), Image.Resampling.BILINEAR))
    return out[..., None] if squeeze else out


def to_rgb_uint8(image: np.ndarray) -> np.ndarray:
    """Bring a bundled image (bool, float in [0, 1], gray, RGB or RGBA) to uint8 HxWx3."""
    if image.dtype == bool:
        image = image.astype(np.uint8) * 255
    elif image.dtype != np.uint8:
        image = np.clip(np.round(image * 255.0), 0, 255).astype(np.uint8)
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    if image.shape[2] == 4:  # composite RGBA on white
        alpha = image[..., 3:].astype(np.float64) / 255.0
        image = np.round(image[..., :3] * alpha + 255.0 * (1.0 - alpha)).astype(np.uint8)
    return np.ascontiguousarray(image)


def _skimage(name: str) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        from skimage import data
        image = getattr(data, name)()
        return image[0] if isinstance(image, tuple) else image  # stereo_motorcycle: left view
    return load


def _sklearn_photo(filename: str) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        from sklearn.datasets import load_sample_image
        return load_sample_image(filename)
    return load


def _lfw_faces() -> np.ndarray:
    """The 100 face crops of ``skimage.data.lfw_subset`` tiled 10x10 into one image."""
    from skimage import data
    faces = data.lfw_subset()[:100]
    return faces.reshape(10, 10, 25, 25).transpose(0, 2, 1, 3).reshape(250, 250)


# Bundled photos that load offline (skimage's eagle, brain, kidney, lily, ... need a download).
PHOTOS: dict[str, Callable[[], np.ndarray]] = {
    **{name: _skimage(name) for name in (
        "astronaut", "brick", "camera", "cell", "chelsea", "clock", "coffee", "coins",
        "colorwheel", "grass", "gravel", "hubble_deep_field", "immunohistochemistry",
        "logo", "microaneurysms", "moon", "page", "retina", "rocket", "shepp_logan_phantom",
        "stereo_motorcycle", "text")},
    "china": _sklearn_photo("china.jpg"),
    "flower": _sklearn_photo("flower.jpg"),
    "lfw_faces": _lfw_faces,
}


@functools.lru_cache(maxsize=None)
def photo(name: str) -> np.ndarray:
    """A bundled photo as uint8 HxWx3 (cached; treat as read-only)."""
    image = to_rgb_uint8(PHOTOS[name]())
    image.setflags(write=False)
    return image


def random_crop(rng: np.random.Generator, image: np.ndarray, side_range: tuple[int, int],
                columns: tuple[float, float] = (0.0, 1.0)) -> np.ndarray:
    """A random square crop whose side lies in ``side_range`` (clipped to the image).

    ``columns`` restricts the crop to a vertical band of the image, as fractions
    of its width, so train and test crops can come from disjoint regions.
    """
    height, width = image.shape[:2]
    x_lo, x_hi = int(columns[0] * width), int(columns[1] * width)
    max_side = min(side_range[1], height, x_hi - x_lo)
    side = int(rng.integers(min(side_range[0], max_side), max_side + 1))
    top = int(rng.integers(0, height - side + 1))
    left = int(rng.integers(x_lo, x_hi - side + 1))
    return image[top:top + side, left:left + side]


def balanced_labels(rng: np.random.Generator, n: int, num_classes: int) -> np.ndarray:
    """``n`` labels, as equal per class as possible, in a random order."""
    return rng.permutation(np.arange(n) % num_classes)


# ---------------------------------------------------------------- digits

def digits() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's 1797 bundled handwritten digits: uint8 [n, 8, 8] in 0..255 and labels."""
    from sklearn.datasets import load_digits
    bunch = load_digits()
    images = np.round(bunch.images * (255.0 / 16.0)).astype(np.uint8)
    return images, bunch.target.astype(np.int64)


def digit_split(seed: int, sizes: Sequence[int], side: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Disjoint random subsets of the digits (one per size), upsampled to side x side x 1."""
    images, labels = digits()
    order = rng_for(seed, "mini_digits").permutation(len(images))
    parts, start = [], 0
    for size in sizes:
        idx = order[start:start + size]
        start += size
        parts.append((np.stack([resize(images[i], side)[..., None] for i in idx]), labels[idx]))
    return parts


# ---------------------------------------------------------------- textures

TEXTURES = ("brick", "grass", "gravel", "moon", "hubble_deep_field", "immunohistochemistry", "text")


def texture_crops(seed: int, split: str, n: int, side: int,
                  columns: tuple[float, float]) -> tuple[np.ndarray, np.ndarray]:
    """``n`` texture patches (side x side x 3) labelled by the photo they come from."""
    rng = rng_for(seed, "mini_textures", split)
    labels = balanced_labels(rng, n, len(TEXTURES))
    images = [resize(random_crop(rng, photo(TEXTURES[c]), (48, 128), columns), side) for c in labels]
    return np.stack(images), labels.astype(np.int64)


# ---------------------------------------------------------------- histology

def _stain_map() -> np.ndarray:
    """DAB (brown stain) density of the bundled immunohistochemistry photo."""
    from skimage.color import rgb2hed
    return rgb2hed(photo("immunohistochemistry"))[..., 2]


def histology_patches(seed: int, split: str, n: int, side: int, columns: tuple[float, float],
                      thresholds: tuple[float, float] = (0.04, 0.07)) -> tuple[np.ndarray, np.ndarray]:
    """PatchCamelyon-like patches: label 1 when the centre of the patch is stained tissue.

    The label is the mean DAB density of the central (side/2)^2 region: below
    ``thresholds[0]`` is class 0, above ``thresholds[1]`` class 1, in between
    the patch is ambiguous and skipped. Classes are balanced.
    """
    rng = rng_for(seed, "mini_histology", split)
    image, stain = photo("immunohistochemistry"), _stain_map()
    height, width = stain.shape
    x_lo, x_hi = int(columns[0] * width), int(columns[1] * width) - side
    quarter = side // 4
    want = balanced_labels(rng, n, 2)
    pools: dict[int, list[np.ndarray]] = {0: [], 1: []}
    need = {c: int((want == c).sum()) for c in (0, 1)}
    for _ in range(100 * n):
        if all(len(pools[c]) >= need[c] for c in (0, 1)):
            break
        top, left = int(rng.integers(0, height - side + 1)), int(rng.integers(x_lo, x_hi + 1))
        centre = stain[top + quarter:top + side - quarter, left + quarter:left + side - quarter].mean()
        label = 0 if centre < thresholds[0] else 1 if centre > thresholds[1] else -1
        if label >= 0 and len(pools[label]) < need[label]:
            pools[label].append(image[top:top + side, left:left + side])
    if any(len(pools[c]) < need[c] for c in (0, 1)):
        raise DataError(f"mini_histology: could not draw {need} balanced patches from columns {columns} "
                        f"of skimage.data.immunohistochemistry(); has the bundled image changed?")
    images = [pools[int(c)].pop() for c in want]
    return np.stack(images), want.astype(np.int64)


# ---------------------------------------------------------------- photos (MD flat source)

PHOTO_CLASSES = tuple(sorted(PHOTOS))


def photo_crops(seed: int, name: str, n: int, side: int) -> np.ndarray:
    """``n`` random crops (side x side x 3) of the bundled photo ``name``."""
    rng = rng_for(seed, "mini_photos", name)
    image = photo(name)
    short = min(image.shape[:2])
    side_range = (max(side, int(0.2 * short)), int(0.6 * short))
    return np.stack([resize(random_crop(rng, image, side_range), side) for _ in range(n)])
