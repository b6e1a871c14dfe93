"""Linear probe: L2-regularised multinomial logistic regression on frozen features.

Hyper-parameter rule (VTAB protocol, Zhai et al. 2019): the regularisation
strength is chosen by fitting on train800 and scoring on val200, then the
model is refit on all 1000 support examples. The test split is never seen.
Tasks without a validation split (MD episodes) use the configured default.
"""

from __future__ import annotations

import warnings
from typing import Optional, Sequence

import gin
import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from fewshot_bench.backbones.features import FeatureExtractor
from fewshot_bench.errors import ConfigError, LearnerError
from fewshot_bench.learners.base import LEARNERS, Learner, Predictor
from fewshot_bench.tasks import Examples, ValidationSplit, check_support


def select_by_validation(candidates: Sequence[float], val_accuracy) -> float:
    """Return the candidate with the best validation accuracy (first one on ties)."""
    scores = [val_accuracy(c) for c in candidates]
    return candidates[int(np.argmax(scores))]


class _LinearPredictor(Predictor):
    def __init__(self, extractor: FeatureExtractor, scaler: StandardScaler, model: LogisticRegression,
                 num_classes: int):
        self.extractor, self.scaler, self.model, self.num_classes = extractor, scaler, model, num_classes

    def predict(self, query: Examples) -> np.ndarray:
        features = self.scaler.transform(self.extractor.extract(query))
        scores = self.model.decision_function(features)
        if self.num_classes == 2:  # scikit-learn gives one score for class 1 of a binary problem
            scores = np.stack([np.zeros_like(scores), scores], axis=1)
        return scores.reshape(len(query), self.num_classes)


@LEARNERS.register("linear_probe")
@gin.configurable
class LinearProbe(Learner):
    """Logistic regression on the backbone's final embedding.

    Args:
      c_grid: inverse regularisation strengths tried on the validation split.
      default_c: the strength used when a task has no validation split.
      max_iter: L-BFGS iterations.
    """

    def __init__(self, backbone=None, seed: int = 0, c_grid: Sequence[float] = (0.01, 0.1, 1.0, 10.0),
                 default_c: float = 1.0, max_iter: int = 1000, extractor: Optional[FeatureExtractor] = None):
        super().__init__(backbone, seed)
        if backbone is None and extractor is None:
            raise ConfigError("linear_probe needs a backbone (--backbone NAME)")
        if not c_grid:
            raise ConfigError("linear_probe: c_grid must name at least one value")
        self.c_grid, self.default_c, self.max_iter = tuple(c_grid), default_c, max_iter
        self.extractor = extractor or FeatureExtractor(backbone)

    def _train(self, features: np.ndarray, labels: np.ndarray, c: float, num_classes: int):
        if not np.isfinite(features).all():
            raise LearnerError("linear_probe: the backbone produced NaN or infinite features")
        scaler = StandardScaler().fit(features)
        model = LogisticRegression(C=c, max_iter=self.max_iter)
        with warnings.catch_warnings():  # few-shot supports trip scikit-learn's "regression?" heuristic
            warnings.filterwarnings("ignore", message="The number of unique classes", category=UserWarning)
            model.fit(scaler.transform(features), labels)
        if len(model.classes_) != num_classes:
            raise LearnerError(f"linear_probe: support holds {len(model.classes_)} of {num_classes} classes")
        return scaler, model

    def fit(self, support: Examples, num_classes: int,
            validation: Optional[ValidationSplit] = None) -> Predictor:
        check_support(support, num_classes)
        c = self.default_c
        if validation is not None and len(self.c_grid) > 1:
            train_x = self.extractor.extract(validation.train)
            val_x = self.extractor.extract(validation.val)

            def val_accuracy(candidate: float) -> float:
                scaler, model = self._train(train_x, validation.train.labels, candidate,
                                            len(np.unique(validation.train.labels)))
                return float((model.predict(scaler.transform(val_x)) == validation.val.labels).mean())

            c = select_by_validation(self.c_grid, val_accuracy)
        scaler, model = self._train(self.extractor.extract(support), support.labels, c, num_classes)
        self.chosen_c = c
        return _LinearPredictor(self.extractor, scaler, model, num_classes)
