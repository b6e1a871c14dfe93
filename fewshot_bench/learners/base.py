"""The Learner interface that every transfer learner and meta-learner implements.

``Learner.fit(support, num_classes, validation=None)`` adapts to one Task and
returns a :class:`Predictor`; ``Predictor.predict(query)`` returns logits of
shape ``[len(query), num_classes]``. The query :class:`Examples` a predictor
receives carry images and ids but no labels.

A learner is built by the registry as ``factory(backbone=..., seed=..., **kwargs)``
and its constructor arguments are gin-configurable.
"""

from __future__ import annotations

import abc
from typing import Iterable, Optional

import numpy as np

from fewshot_bench.backbones.base import Backbone
from fewshot_bench.errors import LearnerError
from fewshot_bench.registry import Registry
from fewshot_bench.tasks import Examples, Task, ValidationSplit


class Predictor(abc.ABC):
    """A fitted model for one Task."""

    @abc.abstractmethod
    def predict(self, query: Examples) -> np.ndarray:
        """Logits ``[len(query), num_classes]`` for unlabelled query examples."""


class Learner(abc.ABC):
    """Adapts to a Task's support set. Subclasses implement :meth:`fit`."""

    def __init__(self, backbone: Optional[Backbone] = None, seed: int = 0):
        self.backbone = backbone
        self.seed = seed

    @abc.abstractmethod
    def fit(self, support: Examples, num_classes: int,
            validation: Optional[ValidationSplit] = None) -> Predictor:
        """Adapt to ``support`` (labels 0..num_classes-1).

        ``validation``, when given, is a train -> val split inside ``support``
        for hyper-parameter selection; the final model is refit on all of
        ``support``.
        """

    def meta_train(self, tasks: Iterable[Task]) -> None:  # optional
        """Train on a stream of training Tasks (meta-learners override this)."""
        raise LearnerError(f"{type(self).__name__} does not meta-train: use a learner that implements meta_train")


LEARNERS: Registry[Learner] = Registry("learner", "fewshot_bench.learners", required_methods=("fit",))
