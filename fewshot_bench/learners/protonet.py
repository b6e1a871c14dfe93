"""Prototypical Networks (Snell et al. 2017) on a frozen backbone's embedding.

Rule: a class's prototype is the mean of its support embeddings, and the logit
of a query for a class is the negative squared Euclidean distance to that
prototype (:func:`prototypes`, :func:`prototype_logits`). Embeddings come from
the feature cache. ``fewshot-bench train --learner protonet`` meta-trains the
backbone first (:meth:`ProtoNet.meta_train_step`, see
:mod:`fewshot_bench.learners.meta_training`).
"""

from __future__ import annotations

import time
from typing import Any, Iterable, Optional

import gin
import numpy as np

from fewshot_bench.backbones.base import Backbone
from fewshot_bench.backbones.features import FeatureExtractor
from fewshot_bench.errors import ConfigError, LearnerError
from fewshot_bench.learners.base import LEARNERS, Learner, Predictor
from fewshot_bench.tasks import Examples, Task, ValidationSplit, check_support


def prototypes(embeddings: np.ndarray, labels: np.ndarray, num_classes: int) -> np.ndarray:
    """The mean support embedding of each class 0..num_classes-1, ``[num_classes, d]``."""
    embeddings = np.asarray(embeddings, np.float64)
    counts = np.bincount(labels, minlength=num_classes)
    if len(counts) > num_classes or (counts == 0).any():
        raise LearnerError(f"prototypes: classes {np.flatnonzero(counts == 0).tolist()[:10]} of {num_classes} "
                           f"have no support example")
    sums = np.zeros((num_classes, embeddings.shape[1]))
    np.add.at(sums, labels, embeddings)
    return sums / counts[:, None]


def prototype_logits(embeddings: np.ndarray, protos: np.ndarray) -> np.ndarray:
    """``-||x - c_k||^2`` for every embedding ``x`` and prototype ``c_k``: ``[n, num_classes]``."""
    x = np.asarray(embeddings, np.float64)
    c = np.asarray(protos, np.float64)
    return -((x ** 2).sum(1)[:, None] - 2.0 * x @ c.T + (c ** 2).sum(1)[None, :])


def check_finite(values: np.ndarray, what: str) -> np.ndarray:
    if not np.isfinite(values).all():
        raise LearnerError(f"{what} holds NaN or infinite values: the backbone's weights or inputs are broken "
                           f"(a diverged meta-training run?)")
    return values


# ---- TensorFlow versions, for meta-training ----


def tf_prototypes(embeddings: Any, labels: Any, num_classes: int) -> Any:
    """Class means of ``embeddings`` (TensorFlow, differentiable)."""
    import tensorflow as tf

    one_hot = tf.one_hot(labels, num_classes, dtype=embeddings.dtype)
    return tf.matmul(one_hot, embeddings, transpose_a=True) / tf.reduce_sum(one_hot, axis=0)[:, None]


def tf_prototype_logits(embeddings: Any, protos: Any) -> Any:
    """``-||x - c_k||^2`` (TensorFlow, differentiable)."""
    import tensorflow as tf

    return -(tf.reduce_sum(embeddings ** 2, 1)[:, None] - 2.0 * tf.matmul(embeddings, protos, transpose_b=True)
             + tf.reduce_sum(protos ** 2, 1)[None, :])


def episode_arrays(task: Task) -> tuple[Examples, Examples]:
    """The support and the whole (labelled) query of a training episode."""
    check_support(task.support, task.num_classes)
    query = Examples.concat(list(task.query))
    if len(query) == 0:
        raise LearnerError(f"training episode {task.key} has an empty query set")
    return task.support, query


class _ProtoPredictor(Predictor):
    def __init__(self, extractor: FeatureExtractor, protos: np.ndarray):
        self.extractor, self.protos = extractor, protos

    def predict(self, query: Examples) -> np.ndarray:
        embeddings = check_finite(self.extractor.extract(query), "protonet: the query embeddings")
        return prototype_logits(embeddings, self.protos).astype(np.float32)


@LEARNERS.register("protonet")
@gin.configurable
class ProtoNet(Learner):
    """Nearest prototype under squared Euclidean distance. Fit time: ``last_fit_seconds``.

    Args:
      batch_size: images per forward pass of the feature extractor.
      layer: the backbone output used as the embedding.
    """

    def __init__(self, backbone: Optional[Backbone] = None, seed: int = 0, batch_size: int = 64,
                 layer: str = "embedding"):
        super().__init__(backbone, seed)
        if backbone is None:
            raise ConfigError("protonet needs a backbone (--backbone NAME)")
        self.batch_size, self.layer = batch_size, layer
        self._extractor: Optional[FeatureExtractor] = None
        self.last_fit_seconds = 0.0

    @property
    def extractor(self) -> FeatureExtractor:
        """Built on first use, so meta-training (which changes the weights) never meets a stale cache."""
        if self._extractor is None:
            self._extractor = FeatureExtractor(self.backbone, layers=(self.layer,), batch_size=self.batch_size)
        return self._extractor

    def fit(self, support: Examples, num_classes: int,
            validation: Optional[ValidationSplit] = None) -> Predictor:
        start = time.perf_counter()
        check_support(support, num_classes)
        embeddings = check_finite(self.extractor.extract(support), "protonet: the support embeddings")
        protos = prototypes(embeddings, support.labels, num_classes)
        self.last_fit_seconds = time.perf_counter() - start
        return _ProtoPredictor(self.extractor, protos)

    # ---- meta-training ----

    def trainable_variables(self) -> list:
        return list(self.backbone.model.trainable_variables)

    def meta_train_step(self, task: Task, optimizer: Any) -> dict[str, float]:
        """One episode of ProtoNet training: cross-entropy of the query under the support's prototypes."""
        import tensorflow as tf

        support, query = episode_arrays(task)
        with tf.GradientTape() as tape:
            s = self.backbone(support.images, training=True)[self.layer]
            q = self.backbone(query.images, training=True)[self.layer]
            logits = tf_prototype_logits(q, tf_prototypes(s, support.labels, task.num_classes))
            loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(query.labels, logits))
        if not np.isfinite(float(loss)):
            raise LearnerError(f"protonet meta-training diverged on episode {task.key} (loss {float(loss)}); "
                               f"lower the learning rate")
        variables = self.trainable_variables()
        optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
        accuracy = float(np.mean(np.argmax(logits.numpy(), 1) == query.labels))
        return {"loss": float(loss), "accuracy": accuracy}

    def meta_train(self, tasks: Iterable[Task], learning_rate: float = 1e-3) -> None:
        """Train the backbone on ``tasks`` with Adam (no checkpoints; see ``fewshot-bench train``).

        The trained backbone gets a new weights id, so no feature cache (in memory or on disk)
        serves embeddings of the weights before training.
        """
        import keras

        from fewshot_bench.backbones.weights import retrained

        optimizer = keras.optimizers.Adam(learning_rate)
        for task in tasks:
            self.meta_train_step(task, optimizer)
        self.backbone = retrained(self.backbone)
        self._extractor = None
