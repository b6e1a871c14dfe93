"""Batch (non-episodic) reading of a split's classes, for pre-training and meta-training.

Every image of the split's classes once per epoch, in a seeded order; labels
are the classes' indices within the split (0..C-1). Images are read by seeks
(see :mod:`reader`), one class file open at a time.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import numpy as np

from fewshot_bench.datasets.meta_dataset.reader import DEFAULT_IMAGE_SIZE, SourceReader, image_id
from fewshot_bench.datasets.meta_dataset.spec import check_split
from fewshot_bench.errors import ConfigError
from fewshot_bench.tasks import Examples


def epoch_order(total: int, seed: int, epoch: int, shuffle: bool) -> np.ndarray:
    """The positions 0..total-1 in the order epoch ``epoch`` visits them."""
    if not shuffle:
        return np.arange(total, dtype=np.int64)
    return np.random.default_rng([int(seed), int(epoch)]).permutation(total)


def locate(positions: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Map flat positions over classes of sizes ``counts`` to (class index, record index)."""
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    class_index = np.searchsorted(np.cumsum(counts), positions, side="right")
    return class_index, positions - starts[class_index]


def split_batches(records_root: str | Path, source: str, split: str = "train", batch_size: int = 256,
                  image_size: int = DEFAULT_IMAGE_SIZE, seed: int = 0, shuffle: bool = True,
                  epochs: int = 1, drop_remainder: bool = False) -> Iterator[Examples]:
    """Batches of ``(images, split-relative labels, ids)`` over every image of the split's classes."""
    if batch_size < 1 or epochs < 1:
        raise ConfigError(f"split_batches: batch_size ({batch_size}) and epochs ({epochs}) must be positive")
    reader = SourceReader(Path(records_root) / source)
    classes = np.asarray(reader.spec.classes(check_split(split)), dtype=np.int64)
    if len(classes) == 0:
        raise ConfigError(f"source {source!r} has no {split} classes; choose another split or source")
    counts = np.asarray([reader.spec.images_per_class[int(c)] for c in classes], dtype=np.int64)
    total = int(counts.sum())
    for epoch in range(epochs):
        order = epoch_order(total, seed, epoch, shuffle)
        for start in range(0, total, batch_size):
            positions = order[start:start + batch_size]
            if drop_remainder and len(positions) < batch_size:
                break
            class_index, records = locate(positions, counts)
            images = np.empty((len(positions), image_size, image_size, 3), np.float32)
            for k in np.unique(class_index):
                at = np.flatnonzero(class_index == k)
                images[at] = reader.read_images(int(classes[k]), records[at].tolist(), image_size)
            ids = tuple(image_id(source, int(classes[k]), int(r)) for k, r in zip(class_index, records))
            yield Examples(images, class_index.astype(np.int64), ids)
