"""fo-Proto-MAML (Triantafillou et al. 2020): MAML whose linear head starts at the prototypes.

Rules:

- Head initialisation (:func:`prototype_head`): with class prototypes ``c_k``
  (support-embedding means), ``W_k = 2 c_k`` and ``b_k = -||c_k||^2``. Then
  ``x . W_k + b_k = -||x - c_k||^2 + ||x||^2``: the same softmax, hence the same
  predictions, as ProtoNet before any inner step.
- Inner loop: ``num_steps`` steps of plain SGD (learning rate ``learning_rate``)
  on the support set's cross-entropy, over the head and (``adapt_backbone``)
  every trainable variable of the backbone. Meta-Dataset's presets: 10 steps at
  ``0.0054``, and a variant with 100 steps at evaluation (``gin/learners/``).
- Divergence (:func:`diverged`): if the support loss, before any step or after
  the last, exceeds ``divergence_factor * initial + 1`` (or is not finite), the
  task stops with a LearnerError rather than scoring a wrecked backbone. The
  MD-v2 step size suits backbones meta-trained with it; an ImageNet backbone
  with large embeddings needs a smaller one (``gin/learners/protomaml_mini.gin``).
- Batch norm (``batch_norm``): ``"moving"`` normalises with the backbone's
  moving statistics everywhere (only the affine parameters adapt);
  ``"batch"`` uses the statistics of the support set in the inner loop and of
  each query batch at prediction (transductive, like Meta-Dataset's code).
- Meta-training (first order, :meth:`ProtoMAML.meta_train_step`): the query loss
  at the adapted weights gives gradients for the backbone and for the head; the
  head's gradient flows back through the prototype initialisation at the
  initial weights; their sum updates the initial weights. Batch statistics are
  used throughout (the moving statistics accumulate for evaluation).

The backbone is adapted in place and restored after every fit (and around
every prediction), so tasks are independent and the shared backbone is unchanged.
"""

from __future__ import annotations

import time
from typing import Any, Iterable, Optional

import gin
import numpy as np

from fewshot_bench.backbones.base import Backbone
from fewshot_bench.errors import ConfigError, LearnerError
from fewshot_bench.learners.base import LEARNERS, Learner, Predictor
from fewshot_bench.learners.protonet import check_finite, episode_arrays, prototypes, tf_prototypes
from fewshot_bench.tasks import Examples, Task, ValidationSplit, check_support

BATCH_NORM_MODES = ("moving", "batch")


def prototype_head(protos: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Proto-MAML's head from prototypes ``[k, d]``: ``W = 2 c^T`` ``[d, k]``, ``b = -||c_k||^2`` ``[k]``."""
    protos = np.asarray(protos, np.float64)
    return (2.0 * protos.T).astype(np.float32), (-(protos ** 2).sum(axis=1)).astype(np.float32)


def tf_prototype_head(protos: Any) -> tuple[Any, Any]:
    """:func:`prototype_head` in TensorFlow (differentiable)."""
    import tensorflow as tf

    return 2.0 * tf.transpose(protos), -tf.reduce_sum(protos ** 2, axis=1)


def diverged(loss: float, initial: float, factor: float) -> bool:
    """True if ``loss`` is not finite or exceeds ``factor * initial + 1`` (inner-loop divergence)."""
    return not np.isfinite(loss) or loss > factor * initial + 1.0


class _WeightsSwap:
    """Puts a weight list into the model for the duration of a ``with`` block, then restores the old one."""

    def __init__(self, model: Any, weights: Optional[list[np.ndarray]]):
        self.model, self.weights, self.saved = model, weights, None

    def __enter__(self):
        if self.weights is not None:
            self.saved = self.model.get_weights()
            self.model.set_weights(self.weights)

    def __exit__(self, *exc):
        if self.saved is not None:
            self.model.set_weights(self.saved)


class _ProtoMAMLPredictor(Predictor):
    def __init__(self, learner: "ProtoMAML", weights: Optional[list[np.ndarray]], head: tuple[np.ndarray, np.ndarray]):
        self.learner, self.weights, self.head = learner, weights, head

    def predict(self, query: Examples) -> np.ndarray:
        with _WeightsSwap(self.learner.backbone.model, self.weights):
            embeddings = self.learner.embed(query.images, self.learner.batch_norm == "batch")
        logits = embeddings @ self.head[0] + self.head[1]
        return check_finite(logits, "protomaml: the query logits").astype(np.float32)


@LEARNERS.register("protomaml")
@gin.configurable
class ProtoMAML(Learner):
    """fo-Proto-MAML. Fit time of the last task: ``last_fit_seconds``.

    Args:
      num_steps: inner SGD steps at evaluation (MD: 10; the 100-step variant: 100).
      train_num_steps: inner steps during meta-training (None: ``num_steps``).
      learning_rate: the inner loop's SGD learning rate (MD: 0.0054).
      batch_norm: "moving" or "batch" (see the module docstring).
      adapt_backbone: adapt the backbone in the inner loop (False: the head only).
      layer: the backbone output used as the embedding.
      batch_size: images per forward pass at prediction with moving statistics.
      inner_batch_size: support examples per forward/backward pass of an inner step
        (None: all at once); the step's gradient is always the whole support set's.
      divergence_factor: the task stops with an error when the support loss, at
        any step or after the last, exceeds ``factor * initial loss + 1``
        (:func:`diverged`): a learning rate too large for the backbone's scale.
    """

    def __init__(self, backbone: Optional[Backbone] = None, seed: int = 0, num_steps: int = 10,
                 train_num_steps: Optional[int] = None, learning_rate: float = 0.0054,
                 batch_norm: str = "moving", adapt_backbone: bool = True, layer: str = "embedding",
                 batch_size: int = 64, inner_batch_size: Optional[int] = None, divergence_factor: float = 2.0):
        super().__init__(backbone, seed)
        if backbone is None:
            raise ConfigError("protomaml needs a backbone (--backbone NAME)")
        if batch_norm not in BATCH_NORM_MODES:
            raise ConfigError(f"protomaml: batch_norm={batch_norm!r}; choose one of {', '.join(BATCH_NORM_MODES)}")
        if num_steps < 0 or (train_num_steps is not None and train_num_steps < 0) or learning_rate < 0:
            raise ConfigError("protomaml: num_steps, train_num_steps and learning_rate must not be negative")
        self.num_steps = num_steps
        self.train_num_steps = num_steps if train_num_steps is None else train_num_steps
        self.learning_rate, self.batch_norm = learning_rate, batch_norm
        self.adapt_backbone, self.layer, self.batch_size = adapt_backbone, layer, batch_size
        self.divergence_factor, self.inner_batch_size = divergence_factor, inner_batch_size
        if inner_batch_size is not None and inner_batch_size < 1:
            raise ConfigError(f"protomaml: inner_batch_size={inner_batch_size} must be positive (or None: all at once)")
        self.support_losses: list[float] = []  # support loss before each inner step and after the last
        self._steps: dict[Any, Any] = {}
        self.last_fit_seconds = 0.0

    # ---- pieces ----

    def _inputs(self, images01: np.ndarray) -> np.ndarray:
        return self.backbone.preprocess(images01)

    def embed(self, images01: np.ndarray, training: bool) -> np.ndarray:
        """Embeddings of [0, 1] images (batch statistics: all in one batch; else in ``batch_size`` chunks)."""
        model, inputs = self.backbone.model, self._inputs(images01)
        if training:
            return np.asarray(model(inputs, training=True)[self.layer], np.float32)
        parts = [np.asarray(model(inputs[i:i + self.batch_size], training=False)[self.layer], np.float32)
                 for i in range(0, len(inputs), self.batch_size)]
        return np.concatenate(parts) if parts else np.zeros((0, 0), np.float32)

    def _variables(self) -> list:
        return list(self.backbone.model.trainable_variables) if self.adapt_backbone else []

    def _compiled(self, kind: str, training: bool):
        """Compiled pieces of the inner loop (built once per learner).

        ``"grad"``: (summed support loss of a chunk, gradients for W, b and the adapted
        variables); ``"loss"``: the summed loss of a chunk; ``"apply"``: ``v -= lr * g``
        for the adapted variables.
        """
        key = (kind, training)
        if key not in self._steps:
            import tensorflow as tf

            model, layer, lr, variables = self.backbone.model, self.layer, self.learning_rate, self._variables()

            def summed_loss(inputs, labels, weights, bias):
                logits = tf.matmul(model(inputs, training=training)[layer], weights) + bias
                return tf.reduce_sum(tf.nn.sparse_softmax_cross_entropy_with_logits(labels, logits))

            def grad(inputs, labels, weights, bias):
                with tf.GradientTape() as tape:
                    tape.watch([weights, bias])
                    loss = summed_loss(inputs, labels, weights, bias)
                targets = [weights, bias, *variables]
                grads = tape.gradient(loss, targets)
                return loss, [tf.zeros_like(t) if g is None else g for t, g in zip(targets, grads)]

            def apply(grads):
                for variable, g in zip(variables, grads):
                    variable.assign_sub(lr * g)
                return tf.constant(0)

            fn = {"grad": grad, "loss": summed_loss, "apply": apply}[kind]
            self._steps[key] = tf.function(fn, reduce_retracing=True)
        return self._steps[key]

    def inner_loop(self, support: Examples, head: tuple[Any, Any], steps: int, training: bool,
                   divergence_factor: Optional[float] = None) -> tuple[Any, Any]:
        """``steps`` SGD steps on the support set from ``head``; the backbone changes in place.

        Each step's gradient is the full support set's, summed over chunks of
        ``inner_batch_size`` examples (the same step, less memory; with batch
        statistics each chunk is normalised by its own). Raises LearnerError when
        the support loss is not finite or, given ``divergence_factor``, diverges (:func:`diverged`).
        """
        import tensorflow as tf

        n = len(support)
        size = self.inner_batch_size or n
        inputs = self._inputs(support.images)
        chunks = [(tf.constant(inputs[i:i + size]), tf.constant(support.labels[i:i + size], tf.int64))
                  for i in range(0, n, size)]
        weights, bias = tf.constant(head[0]), tf.constant(head[1])
        grad_fn, loss_fn, apply_fn = (self._compiled(kind, training) for kind in ("grad", "loss", "apply"))
        first = None
        self.support_losses = []
        for k in range(steps + 1 if steps else 0):
            if k < steps:
                total, grads = 0.0, None
                for x, y in chunks:
                    loss, chunk_grads = grad_fn(x, y, weights, bias)
                    total += float(loss)
                    grads = chunk_grads if grads is None else [a + b for a, b in zip(grads, chunk_grads)]
            else:
                total = sum(float(loss_fn(x, y, weights, bias)) for x, y in chunks)
            loss = total / n  # the support loss after k steps
            first = loss if first is None else first
            self.support_losses.append(loss)
            if not np.isfinite(loss) or (divergence_factor is not None
                                         and diverged(loss, first, divergence_factor)):
                when = f"after step {k} of {steps}" if k else "before the first step"
                raise LearnerError(f"protomaml: the inner loop diverged ({when}: support loss {loss:.4g}, "
                                   f"initially {first:.4g}); lower learning_rate (now {self.learning_rate}) "
                                   f"for this backbone")
            if k < steps:
                grads = [g / n for g in grads]
                weights, bias = weights - self.learning_rate * grads[0], bias - self.learning_rate * grads[1]
                if grads[2:]:
                    apply_fn(grads[2:])
        return weights, bias

    # ---- evaluation ----

    def fit(self, support: Examples, num_classes: int,
            validation: Optional[ValidationSplit] = None) -> Predictor:
        start = time.perf_counter()
        check_support(support, num_classes)
        model = self.backbone.model
        training = self.batch_norm == "batch"
        saved = model.get_weights()
        try:
            embeddings = check_finite(self.embed(support.images, training), "protomaml: the support embeddings")
            head = prototype_head(prototypes(embeddings, support.labels, num_classes))
            weights, bias = self.inner_loop(support, head, self.num_steps, training, self.divergence_factor)
            adapted = model.get_weights() if self.adapt_backbone and self.num_steps else None
        finally:
            model.set_weights(saved)
        head = (check_finite(weights.numpy(), "protomaml: the adapted head"), bias.numpy())
        self.last_fit_seconds = time.perf_counter() - start
        return _ProtoMAMLPredictor(self, adapted, head)

    # ---- meta-training ----

    def trainable_variables(self) -> list:
        return list(self.backbone.model.trainable_variables)

    def meta_train_step(self, task: Task, optimizer: Any) -> dict[str, float]:
        """One first-order episode (see the module docstring); batch statistics throughout.

        Only a non-finite loss stops meta-training: early on, an inner loop may
        well raise the support loss, and the outer step is what corrects that.
        """
        import tensorflow as tf

        support, query = episode_arrays(task)
        model, variables = self.backbone.model, self.trainable_variables()
        initial = [tf.identity(v) for v in variables]
        s_inputs, q_inputs = self._inputs(support.images), self._inputs(query.images)
        try:
            head = tf_prototype_head(tf_prototypes(model(s_inputs, training=True)[self.layer], support.labels,
                                                   task.num_classes))
            weights, bias = self.inner_loop(support, (head[0].numpy(), head[1].numpy()), self.train_num_steps,
                                            True)
            with tf.GradientTape() as tape:
                tape.watch([weights, bias])
                logits = tf.matmul(model(q_inputs, training=True)[self.layer], weights) + bias
                loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(query.labels, logits))
            if not np.isfinite(float(loss)):
                raise LearnerError(f"protomaml meta-training diverged on episode {task.key} (query loss "
                                   f"{float(loss)}); lower the learning rates")
            grads = tape.gradient(loss, [weights, bias, *variables])
        finally:  # first order: the adapted gradient moves the starting weights
            for variable, value in zip(variables, initial):
                variable.assign(value)
        with tf.GradientTape() as tape:  # the head's gradient, back through the prototype initialisation
            w0, b0 = tf_prototype_head(tf_prototypes(model(s_inputs, training=True)[self.layer], support.labels,
                                                     task.num_classes))
            surrogate = tf.reduce_sum(grads[0] * w0) + tf.reduce_sum(grads[1] * b0)
        through_head = tape.gradient(surrogate, variables)
        total = [a if b is None else b if a is None else a + b for a, b in zip(grads[2:], through_head)]
        optimizer.apply_gradients([(g, v) for g, v in zip(total, variables) if g is not None])
        accuracy = float(np.mean(np.argmax(logits.numpy(), 1) == query.labels))
        return {"loss": float(loss), "accuracy": accuracy}

    def meta_train(self, tasks: Iterable[Task], learning_rate: float = 1e-3) -> None:
        """Meta-train the backbone on ``tasks`` with Adam (no checkpoints; see ``fewshot-bench train``)."""
        import keras

        optimizer = keras.optimizers.Adam(learning_rate)
        for task in tasks:
            self.meta_train_step(task, optimizer)
