"""Nearest centroid on frozen features: each class is the mean embedding of its support images.

A query image's logit for class ``c`` is minus its squared Euclidean distance
to the centroid of ``c`` (``metric="euclidean"``), or its cosine similarity to
it (``metric="cosine"``: features and centroids are L2-normalised first).
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from fewshot_bench.backbones.features import FeatureExtractor
from fewshot_bench.errors import ConfigError
from fewshot_bench.learners.base import Learner, Predictor
from fewshot_bench.tasks import Examples, ValidationSplit, check_support

METRICS = ("euclidean", "cosine")


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


class CentroidPredictor(Predictor):
    """Scores query images against fixed class centroids."""

    def __init__(self, extractor: FeatureExtractor, centroids: np.ndarray, metric: str):
        self.extractor, self.centroids, self.metric = extractor, centroids, metric

    def predict(self, query: Examples) -> np.ndarray:
        features = self.extractor.extract(query)  # query.labels is None: only images and ids are used
        if self.metric == "cosine":
            return _unit(features) @ _unit(self.centroids).T
        return -((features[:, None, :] - self.centroids[None, :, :]) ** 2).sum(axis=-1)


class NearestCentroid(Learner):
    """Nearest class mean of the backbone's pooled features.

    Args:
      backbone: the frozen backbone (the evaluator passes it).
      seed: unused (the learner makes no random choice); kept for the interface.
      metric: "euclidean" or "cosine".
      layers: backbone outputs to pool and concatenate (default: the final embedding).
    """

    def __init__(self, backbone=None, seed: int = 0, metric: str = "euclidean",
                 layers: Sequence[str] = ("embedding",)):
        super().__init__(backbone, seed)
        if backbone is None:
            raise ConfigError("nearest_centroid needs a backbone (--backbone NAME)")
        if metric not in METRICS:
            raise ConfigError(f"nearest_centroid: metric={metric!r}; choose one of {', '.join(METRICS)}")
        self.metric = metric
        self.extractor = FeatureExtractor(backbone, layers=tuple(layers))

    def fit(self, support: Examples, num_classes: int,
            validation: Optional[ValidationSplit] = None) -> Predictor:
        check_support(support, num_classes)  # LearnerError for an empty support set or a missing class
        features = self.extractor.extract(support)
        if self.metric == "cosine":
            features = _unit(features)
        centroids = np.stack([features[support.labels == c].mean(axis=0) for c in range(num_classes)])
        return CentroidPredictor(self.extractor, centroids, self.metric)
