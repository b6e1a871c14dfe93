"""Shared fixtures: tiny in-memory data and a flattening backbone (no downloads)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO = Path(__file__).resolve().parents[1]
SHARED_MD = REPO.parent / "shared" / "meta_dataset"


@pytest.fixture(scope="session")
def digits():
    """scikit-learn's bundled digits as [0, 1] float32 images of 8x8x3."""
    from sklearn.datasets import load_digits

    data = load_digits()
    images = (data.images / 16.0).astype(np.float32)
    images = np.repeat(images[..., None], 3, axis=-1)
    return images, data.target.astype(np.int64)


@pytest.fixture(scope="session")
def flat_backbone():
    """A parameter-free backbone whose embedding is the flattened image."""
    import keras

    from fewshot_bench.backbones.base import Backbone

    inputs = keras.Input((8, 8, 3))
    pooled = keras.layers.AveragePooling2D(2)(inputs)
    model = keras.Model(inputs, {"embedding": keras.layers.Flatten()(inputs), "pool": pooled})
    return Backbone("flat", model, 8, (0.0, 1.0), ("pool",), "none")
