"""Batched, compiled feature extraction with an in-memory cache keyed by image id.

A frozen backbone pays one forward pass per unique image in a run: features
are cached by (image id, image shape, layer), so an image that appears in many
episodes, or in the support set of one learner and the query of another, is
computed once.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from fewshot_bench.backbones.base import Backbone
from fewshot_bench.tasks import Examples


def global_pool(activation: np.ndarray) -> np.ndarray:
    """Average every spatial axis of ``[n, ..., c]`` away, giving ``[n, c]``."""
    activation = np.asarray(activation)
    if activation.ndim <= 2:
        return activation
    return activation.mean(axis=tuple(range(1, activation.ndim - 1)))


class FeatureExtractor:
    """Extracts pooled features of chosen layers for :class:`Examples`.

    Args:
      backbone: the frozen network.
      layers: output names of the backbone model to return ("embedding" by default).
      batch_size: images per forward pass.
    """

    def __init__(self, backbone: Backbone, layers: Sequence[str] = ("embedding",), batch_size: int = 64):
        import tensorflow as tf

        self.backbone = backbone
        self.layers = tuple(layers)
        self.batch_size = batch_size
        self._cache: dict[tuple[str, tuple[int, ...]], np.ndarray] = {}
        self.forward_images = 0  # images sent through the backbone (for benchmarks)
        model = backbone.model

        @tf.function(reduce_retracing=True)
        def forward(images):
            outputs = model(images, training=False)
            return {name: outputs[name] for name in self.layers}

        self._forward = forward

    def _compute(self, images01: np.ndarray) -> dict[str, np.ndarray]:
        out: dict[str, list[np.ndarray]] = {name: [] for name in self.layers}
        for start in range(0, len(images01), self.batch_size):
            batch = self.backbone.preprocess(images01[start:start + self.batch_size])
            result = self._forward(batch)
            for name in self.layers:
                out[name].append(global_pool(result[name].numpy()))
            self.forward_images += len(batch)
        return {name: np.concatenate(parts) for name, parts in out.items()}

    def extract(self, examples: Examples) -> np.ndarray:
        """Features ``[n, d]`` of the examples: the chosen layers, concatenated."""
        shape = tuple(examples.images.shape[1:])
        todo = [i for i, image_id in enumerate(examples.ids) if (image_id, shape) not in self._cache]
        if todo:
            # Compute each unique new id once, even if it repeats inside the batch.
            first: dict[str, int] = {}
            for i in todo:
                first.setdefault(examples.ids[i], i)
            idx = np.fromiter(first.values(), dtype=np.int64)
            computed = self._compute(examples.images[idx])
            stacked = np.concatenate([computed[name] for name in self.layers], axis=1)
            for row, image_id in zip(stacked, first):
                self._cache[(image_id, shape)] = row
        return np.stack([self._cache[(image_id, shape)] for image_id in examples.ids])

    def clear(self) -> None:
        self._cache.clear()
