"""The Backbone interface: a Keras model plus what the evaluator must know of it.

A backbone's Keras model takes images already mapped into ``value_range`` at
``image_size`` x ``image_size`` and returns a dict of tensors: ``"embedding"``
(the final, pooled embedding, shape ``[n, d]``) and one entry per name in
``feature_names`` (intermediate activations, e.g. ``[n, h, w, c]``).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from fewshot_bench.registry import Registry


@dataclasses.dataclass
class Backbone:
    """A feature extractor network and its input contract.

    Attributes:
      name: registry name, e.g. ``"efficientnet_lite0"``.
      model: Keras model, images in ``value_range`` -> dict of named outputs.
      image_size: the input side length the model expects.
      value_range: ``(low, high)`` of the pixel values the model expects.
      feature_names: names of the intermediate activations, input to output.
      weights_id: short hash identifying the weights (cache and results keys).
    """

    name: str
    model: Any
    image_size: int
    value_range: tuple[float, float]
    feature_names: tuple[str, ...]
    weights_id: str

    def preprocess(self, images01: np.ndarray) -> np.ndarray:
        """Map images with values in [0, 1] into the model's ``value_range``."""
        low, high = self.value_range
        return np.asarray(images01, np.float32) * (high - low) + low

    def __call__(self, images01: np.ndarray, training: bool = False) -> dict[str, Any]:
        """Run the model on [0, 1] images; returns ``"embedding"`` and named features."""
        return self.model(self.preprocess(images01), training=training)

    @property
    def id(self) -> str:
        return f"{self.name}@{self.weights_id}"


BACKBONES: Registry[Backbone] = Registry("backbone", "fewshot_bench.backbones")
