"""Head2Toe (Evci et al., ICML 2022): feature selection over every layer of a frozen backbone.

The rules, each a small pure function below:

1. Features come from every intermediate layer the backbone names, plus its
   final embedding (:func:`default_layers`).
2. Each layer is pooled to about ``target_size`` values (:func:`pooling_grid`,
   :func:`pooled_dim`, :func:`head2toe_pool`): a feature map with ``C >= target``
   channels is globally average-pooled; otherwise it is average-pooled to an
   ``n x n`` grid, ``n = floor(sqrt(target / C))``, with pool size and stride
   ``width // n``, and flattened. A token sequence ``[T, C]`` is pooled the
   same way in one dimension (``m = floor(target / C)`` groups of ``T // m``).
3. Each layer's vector is L2-normalised per example, zero vectors staying
   zero (:func:`normalize_per_layer`), and the layers are concatenated.
4. A linear head is trained with a group-lasso penalty, ``lambda * sum_j
   ||W_j||_2`` over the feature rows ``W_j`` (:func:`train_linear`, proximal
   gradient); a feature's score is its row's L2 norm (:func:`feature_scores`).
5. The top ``keep_fraction`` of the features (:func:`select_features`) are
   re-normalised per layer and an unregularised linear head is trained on them.
6. The target size, ``keep_fraction`` and the penalty are chosen on the
   validation split (VTAB: train800 -> val200; ``cv_folds=5``: 5-fold
   cross-validation on the whole support set), never on test; tasks without a
   validation split (MD episodes) use the ``default_*`` values.

Pooled features come from :class:`FeatureExtractor` with the pooling
``head2toe(target_size=T)`` (registered in ``POOLINGS`` here), so they live in
the feature cache: a second run pays no forward passes.
"""

from __future__ import annotations

import itertools
import math
import time
from typing import Any, Optional, Sequence

import gin
import numpy as np

from fewshot_bench.backbones.base import Backbone
from fewshot_bench.backbones.features import POOLINGS, FeatureExtractor
from fewshot_bench.errors import ConfigError, LearnerError
from fewshot_bench.learners.base import LEARNERS, Learner, Predictor
from fewshot_bench.tasks import Examples, ValidationSplit, check_support

# ---- rule 1: which layers ----


def default_layers(backbone: Backbone) -> tuple[str, ...]:
    """Every intermediate layer the backbone names, then its final embedding (once)."""
    names = tuple(backbone.feature_names)
    return names if "embedding" in names else (*names, "embedding")


# ---- rule 2: pooling to a target size ----


def pooling_grid(channels: int, width: int, target_size: int) -> int:
    """Side ``n`` of the grid a ``[width, width, channels]`` map is pooled to (1: global average).

    Head2Toe: ``n = 1`` if ``channels >= target_size``, else ``floor(sqrt(target_size / channels))``,
    at most ``width`` (a map is never upsampled).
    """
    if channels >= target_size:
        return 1
    return max(1, min(width, math.isqrt(target_size // channels)))


def token_groups(channels: int, length: int, target_size: int) -> int:
    """Number ``m`` of token groups a ``[length, channels]`` sequence is pooled to (1: global average).

    The one-dimensional analogue of :func:`pooling_grid`: ``m = floor(target_size / channels)``,
    between 1 and ``length``.
    """
    if channels >= target_size:
        return 1
    return max(1, min(length, target_size // channels))


def pooled_dim(shape: Sequence[int], target_size: int) -> int:
    """Length of the pooled vector of one example's activation of ``shape`` (batch axis excluded).

    ``[h, w, c]``: a pool of ``(h // n, w // n)`` with the same stride ("valid") leaves
    ``(h // (h // n)) * (w // (w // n))`` positions of ``c`` values; ``[t, c]``: ``t // (t // m)``
    groups; ``[d]``: ``d``.
    """
    shape = tuple(int(s) for s in shape)
    if len(shape) == 1:
        return shape[0]
    if len(shape) == 2:
        length, channels = shape
        pool = length // token_groups(channels, length, target_size)
        return (length // pool) * channels
    if len(shape) == 3:
        height, width, channels = shape
        n = pooling_grid(channels, width, target_size)
        return (height // max(1, height // n)) * (width // (width // n)) * channels
    raise ConfigError(f"head2toe: cannot pool an activation of shape {shape}: expected [d], [tokens, channels] "
                      f"or [height, width, channels]")


def head2toe_pool(x: Any, target_size: int) -> Any:
    """Pool a TensorFlow activation ``[batch, ...]`` to ``[batch, pooled_dim]`` by the Head2Toe rule."""
    import tensorflow as tf

    rank = x.shape.rank
    if rank == 2:
        return x
    if rank == 3:
        length, channels = int(x.shape[1]), int(x.shape[2])
        pool = length // token_groups(channels, length, target_size)
        pooled = tf.nn.avg_pool1d(x, ksize=pool, strides=pool, padding="VALID")
        return tf.reshape(pooled, [-1, (length // pool) * channels])
    if rank == 4:
        height, width, channels = (int(s) for s in x.shape[1:])
        n = pooling_grid(channels, width, target_size)
        if n == 1:
            return tf.reduce_mean(x, axis=[1, 2])
        size = (max(1, height // n), width // n)
        pooled = tf.nn.avg_pool2d(x, ksize=size, strides=size, padding="VALID")
        return tf.reshape(pooled, [-1, pooled_dim((height, width, channels), target_size)])
    raise ConfigError(f"head2toe: cannot pool an activation of shape {x.shape}")


@POOLINGS.register("head2toe")
def _head2toe_pooling(target_size: int = 1024):
    """``head2toe(target_size=T)``: the Head2Toe pooling of each layer to about T values."""
    if not isinstance(target_size, int) or target_size < 1:
        raise ConfigError(f"head2toe pooling: target_size={target_size!r} must be a positive int")
    return lambda x: head2toe_pool(x, target_size)


# ---- rule 3: per-layer normalisation ----


def normalize_per_layer(features: np.ndarray, dims: Sequence[int]) -> np.ndarray:
    """L2-normalise each layer's block of columns per example (a zero block stays zero)."""
    features = np.asarray(features, np.float32)
    if sum(dims) != features.shape[1]:
        raise LearnerError(f"head2toe: layer sizes {list(dims)} sum to {sum(dims)}, "
                           f"but the features have {features.shape[1]} columns")
    out = np.empty_like(features)
    start = 0
    for dim in dims:
        block = features[:, start:start + dim]
        norms = np.linalg.norm(block, axis=1, keepdims=True)
        out[:, start:start + dim] = np.divide(block, norms, out=np.zeros_like(block), where=norms > 0)
        start += dim
    return out


# ---- rule 4: group-lasso linear head and feature scores ----


def group_lasso_penalty(weights: np.ndarray) -> float:
    """``sum_j ||W_j||_2`` over the rows ``W_j`` (one per feature) of ``weights [d, k]``."""
    return float(np.linalg.norm(weights, axis=1).sum())


def softmax_cross_entropy(logits: np.ndarray, labels: np.ndarray) -> tuple[float, np.ndarray]:
    """Mean softmax cross-entropy and its gradient with respect to the logits."""
    shifted = logits - logits.max(axis=1, keepdims=True)
    probabilities = np.exp(shifted)
    probabilities /= probabilities.sum(axis=1, keepdims=True)
    n = len(labels)
    loss = float(-np.log(np.maximum(probabilities[np.arange(n), labels], 1e-30)).mean())
    probabilities[np.arange(n), labels] -= 1.0
    return loss, probabilities / n


def train_linear(features: np.ndarray, labels: np.ndarray, num_classes: int, penalty: float = 0.0,
                 steps: int = 300) -> tuple[np.ndarray, np.ndarray]:
    """A softmax linear head ``(W [d, k], b [k])`` minimising cross-entropy + ``penalty * sum_j ||W_j||``.

    FISTA (accelerated proximal gradient) from zero weights with step ``1 / L``,
    ``L = (mean ||x||^2 + 1) / 2`` bounding the curvature of the cross-entropy; the
    proximal step shrinks each row ``W_j`` by ``step * penalty`` (group soft-thresholding),
    so unselected features get exactly zero rows. ``penalty=0`` is an unregularised head
    trained for ``steps`` steps. Deterministic.
    """
    x = np.ascontiguousarray(features, np.float32)
    xt = np.ascontiguousarray(x.T)  # a contiguous transpose makes the gradient product several times faster
    y = np.asarray(labels, np.int64)
    if not np.isfinite(x).all():
        raise LearnerError("head2toe: the backbone produced NaN or infinite features")
    d = x.shape[1]
    step = 2.0 / (float((x.astype(np.float64) ** 2).sum(axis=1).mean()) + 1.0)
    weights, bias = np.zeros((d, num_classes), np.float32), np.zeros(num_classes, np.float32)
    z_weights, z_bias, t = weights, bias, 1.0
    loss = 0.0
    for _ in range(steps):
        loss, grad = softmax_cross_entropy(x @ z_weights + z_bias, y)
        new_weights = z_weights - step * (xt @ grad)
        new_bias = z_bias - step * grad.sum(axis=0)
        if penalty > 0:
            norms = np.linalg.norm(new_weights, axis=1, keepdims=True)
            shrink = np.maximum(0.0, 1.0 - step * penalty / np.maximum(norms, 1e-30))
            new_weights = new_weights * shrink
        t_next = (1.0 + math.sqrt(1.0 + 4.0 * t * t)) / 2.0
        momentum = (t - 1.0) / t_next
        z_weights = new_weights + momentum * (new_weights - weights)
        z_bias = new_bias + momentum * (new_bias - bias)
        weights, bias, t = new_weights, new_bias, t_next
    if not (np.isfinite(loss) and np.isfinite(weights).all()):
        raise LearnerError(f"head2toe: training the linear head diverged (penalty {penalty}); "
                           f"check the features for extreme values")
    return weights.astype(np.float32), bias.astype(np.float32)


def feature_scores(weights: np.ndarray) -> np.ndarray:
    """Head2Toe's relevance of each feature: the L2 norm of its row of ``weights [d, k]``."""
    return np.linalg.norm(weights, axis=1)


# ---- rule 5: selection ----


def select_features(scores: np.ndarray, keep_fraction: float) -> np.ndarray:
    """Indices (ascending) of the ``ceil(keep_fraction * d)`` best-scored features.

    Ties go to the lower index. Features scored zero (rows the group lasso
    zeroed) are never kept, so a strong penalty can keep fewer, even none.
    """
    if not 0.0 < keep_fraction <= 1.0:
        raise ConfigError(f"head2toe: keep_fraction={keep_fraction} must lie in (0, 1]")
    scores = np.asarray(scores)
    keep = min(max(1, math.ceil(keep_fraction * len(scores) - 1e-9)), int((scores > 0).sum()))
    order = np.argsort(-scores, kind="stable")
    return np.sort(order[:keep])


def selected_dims(dims: Sequence[int], selected: np.ndarray) -> list[int]:
    """Per-layer sizes of the selected (ascending) columns, layers with none left out."""
    layer_of = np.repeat(np.arange(len(dims)), dims)
    counts = np.bincount(layer_of[selected], minlength=len(dims))
    return [int(c) for c in counts if c > 0]


# ---- the learner ----


class _Head2ToePredictor(Predictor):
    def __init__(self, extractor: FeatureExtractor, dims: list[int], selected: np.ndarray,
                 weights: np.ndarray, bias: np.ndarray):
        self.extractor, self.dims, self.selected = extractor, dims, selected
        self.sub_dims = selected_dims(dims, selected)
        self.weights, self.bias = weights, bias

    def predict(self, query: Examples) -> np.ndarray:
        features = normalize_per_layer(self.extractor.extract(query), self.dims)
        return normalize_per_layer(features[:, self.selected], self.sub_dims) @ self.weights + self.bias


@LEARNERS.register("head2toe")
@gin.configurable
class Head2Toe(Learner):
    """Head2Toe on a frozen backbone. Fit time of the last task: ``last_fit_seconds``.

    Args:
      target_sizes: pooled sizes per layer tried on the validation split.
      keep_fractions: fractions of features kept, tried on the validation split.
      penalties: group-lasso strengths tried on the validation split.
      default_target_size, default_keep_fraction, default_penalty: the values
        used when a task has no validation split (MD episodes).
      cv_folds: 0 selects on the task's validation split (train800 -> val200);
        k >= 2 uses k-fold cross-validation over the whole support set instead.
      lasso_steps: proximal-gradient steps of the group-lasso head (scores only).
      head_steps: gradient steps of the final, unregularised head.
      layers: backbone outputs to use (default: all named layers + "embedding").
      batch_size: images per forward pass of the feature extractor.
    """

    def __init__(self, backbone: Optional[Backbone] = None, seed: int = 0,
                 target_sizes: Sequence[int] = (512, 1024), keep_fractions: Sequence[float] = (0.1, 0.3),
                 penalties: Sequence[float] = (1e-4, 1e-3), default_target_size: int = 1024,
                 default_keep_fraction: float = 0.2, default_penalty: float = 1e-3, cv_folds: int = 0,
                 lasso_steps: int = 100, head_steps: int = 300, layers: Optional[Sequence[str]] = None,
                 batch_size: int = 64):
        super().__init__(backbone, seed)
        if backbone is None:
            raise ConfigError("head2toe needs a backbone (--backbone NAME)")
        if not (target_sizes and keep_fractions and penalties):
            raise ConfigError("head2toe: target_sizes, keep_fractions and penalties must each name a value")
        for fraction in (*keep_fractions, default_keep_fraction):
            if not 0.0 < fraction <= 1.0:
                raise ConfigError(f"head2toe: keep fraction {fraction} must lie in (0, 1]")
        if cv_folds == 1 or cv_folds < 0:
            raise ConfigError(f"head2toe: cv_folds={cv_folds}; use 0 (the validation split) or 2 or more folds")
        self.target_sizes, self.keep_fractions = tuple(target_sizes), tuple(keep_fractions)
        self.penalties = tuple(penalties)
        self.default = (default_target_size, default_keep_fraction, default_penalty)
        self.cv_folds, self.batch_size = cv_folds, batch_size
        self.lasso_steps, self.head_steps = lasso_steps, head_steps
        self.layers = tuple(layers) if layers else default_layers(backbone)
        self._extractors: dict[int, FeatureExtractor] = {}
        self._dims: dict[int, list[int]] = {}
        self.chosen: dict[str, float] = {}
        self.last_fit_seconds = 0.0

    # ---- features ----

    def _extractor(self, target_size: int) -> FeatureExtractor:
        if target_size not in self._extractors:
            self._extractors[target_size] = FeatureExtractor(
                self.backbone, layers=self.layers, batch_size=self.batch_size,
                pooling=f"head2toe(target_size={int(target_size)})")
        return self._extractors[target_size]

    def layer_dims(self, target_size: int) -> list[int]:
        """Pooled size of each layer at ``target_size`` (from the model's output shapes)."""
        if target_size not in self._dims:
            shapes = _output_shapes(self.backbone)
            self._dims[target_size] = [pooled_dim(shapes[name], target_size) for name in self.layers]
        return self._dims[target_size]

    def features(self, examples: Examples, target_size: int) -> np.ndarray:
        """Pooled, per-layer normalised features ``[n, d]`` (from the cache when present)."""
        raw = self._extractor(target_size).extract(examples)
        if not np.isfinite(raw).all():
            raise LearnerError("head2toe: the backbone produced NaN or infinite features")
        return normalize_per_layer(raw, self.layer_dims(target_size))

    # ---- training ----

    def scores(self, x: np.ndarray, labels: np.ndarray, num_classes: int, penalty: float) -> np.ndarray:
        """Feature scores: row norms of the group-lasso head."""
        return feature_scores(train_linear(x, labels, num_classes, penalty, self.lasso_steps)[0])

    def _select_and_fit(self, x: np.ndarray, labels: np.ndarray, num_classes: int, dims: list[int],
                        scores: np.ndarray, keep_fraction: float):
        selected = select_features(scores, keep_fraction)
        sub = normalize_per_layer(x[:, selected], selected_dims(dims, selected))
        weights, bias = train_linear(sub, labels, num_classes, 0.0, self.head_steps)
        return selected, weights, bias

    def _accuracy_grid(self, train: Examples, val: Examples, num_classes: int) -> dict[tuple, float]:
        """Validation accuracy of every (target size, keep fraction, penalty)."""
        out = {}
        for target in self.target_sizes:
            dims = self.layer_dims(target)
            x_train, x_val = self.features(train, target), self.features(val, target)
            for penalty in self.penalties:
                scores = self.scores(x_train, train.labels, num_classes, penalty)
                for keep in self.keep_fractions:
                    selected, weights, bias = self._select_and_fit(x_train, train.labels, num_classes, dims,
                                                                   scores, keep)
                    logits = normalize_per_layer(x_val[:, selected], selected_dims(dims, selected)) @ weights + bias
                    out[(target, keep, penalty)] = float((logits.argmax(1) == val.labels).mean())
        return out

    def _folds(self, support: Examples) -> list[tuple[Examples, Examples]]:
        from sklearn.model_selection import StratifiedKFold

        folds = StratifiedKFold(n_splits=self.cv_folds, shuffle=True, random_state=self.seed)
        return [(support.take(a), support.take(b)) for a, b in folds.split(np.zeros(len(support)), support.labels)]

    def choose(self, support: Examples, num_classes: int,
               validation: Optional[ValidationSplit]) -> tuple[int, float, float]:
        """(target size, keep fraction, penalty) with the best validation accuracy (first of the grid on ties)."""
        grid = list(itertools.product(self.target_sizes, self.keep_fractions, self.penalties))
        if validation is None or len(grid) == 1:
            return self.default if validation is None else grid[0]
        splits = self._folds(support) if self.cv_folds else [(validation.train, validation.val)]
        total = {key: 0.0 for key in grid}
        for train, val in splits:
            for key, accuracy in self._accuracy_grid(train, val, num_classes).items():
                total[key] += accuracy
        return max(grid, key=lambda key: (total[key], -grid.index(key)))

    def fit(self, support: Examples, num_classes: int,
            validation: Optional[ValidationSplit] = None) -> Predictor:
        start = time.perf_counter()
        check_support(support, num_classes)
        target, keep, penalty = self.choose(support, num_classes, validation)
        dims = self.layer_dims(target)
        x = self.features(support, target)
        scores = self.scores(x, support.labels, num_classes, penalty)
        if not (scores > 0).any():
            raise LearnerError(f"head2toe: the group-lasso penalty {penalty} zeroed every feature's weights; "
                               f"choose a smaller default_penalty / penalties")
        selected, weights, bias = self._select_and_fit(x, support.labels, num_classes, dims, scores, keep)
        self.chosen = {"target_size": target, "keep_fraction": keep, "penalty": penalty,
                       "features": int(len(selected)), "of": int(x.shape[1])}
        self.last_fit_seconds = time.perf_counter() - start
        return _Head2ToePredictor(self._extractor(target), dims, selected, weights, bias)


def _output_shapes(backbone: Backbone) -> dict[str, tuple[int, ...]]:
    """Per-example shapes of the backbone's outputs (static shapes, else one forward pass on zeros)."""
    try:
        output = backbone.model.output
    except (AttributeError, ValueError):
        output = None
    if isinstance(output, dict) and all(None not in tuple(t.shape[1:]) for t in output.values()):
        return {name: tuple(int(s) for s in t.shape[1:]) for name, t in output.items()}
    zeros = np.zeros((1, backbone.image_size, backbone.image_size, 3), np.float32)
    return {name: tuple(int(s) for s in np.shape(t)[1:]) for name, t in backbone(zeros).items()}
