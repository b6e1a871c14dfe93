"""Whole-network fine-tuning shared by the ``finetune`` and ``bit`` learners.

The network is a trainable copy of the backbone (the shared backbone is never
changed) topped by a zero-initialised linear head, trained with SGD momentum
on softmax cross-entropy under a linear-warmup, step-decay schedule, with
optional random crops, horizontal flips and MixUp. Every random choice comes
from ``numpy.random.default_rng(seed)``, so a fit is a pure function of the
support set, the configuration and the seed.

Tracing a training step of a real backbone takes many seconds on a CPU, so
one :class:`FineTuner` per resolution is reused across fits: each fit starts
by restoring the backbone's weights and zeroing the head and the optimizer's
momentum. The head has a fixed capacity (at least 64 classes, rounded up to a
power of two) whose unused columns are masked out of the softmax, so tasks
with different numbers of classes share one traced step.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Optional, Sequence

import numpy as np

from fewshot_bench.backbones.base import Backbone
from fewshot_bench.errors import ConfigError, LearnerError
from fewshot_bench.learners.base import Predictor
from fewshot_bench.tasks import Examples

MIN_HEAD_CAPACITY = 64
DIVERGENCE_LOSS = 1e3   # a cross-entropy above this (it starts at log(num_classes)) means divergence
MASKED_LOGIT = -1e9
PREDICT_BATCH = 256
MOMENTUM = 0.9          # SGD momentum of VTAB's fine-tuning and of BiT-HyperRule


class Diverged(LearnerError):
    """The training loss became NaN, infinite or larger than ``DIVERGENCE_LOSS``."""


def learning_rate(step: int, base_lr: float, warmup: int, decay_steps: Sequence[int], factor: float = 0.1) -> float:
    """Linear warmup from 0 over ``warmup`` steps, then ``base_lr`` times ``factor`` per boundary passed.

    As in BiT's ``get_lr``: step ``s < warmup`` gets ``base_lr * s / warmup``;
    later steps get ``base_lr * factor ** (number of boundaries <= s)``.
    """
    if step < warmup:
        return base_lr * step / warmup
    return base_lr * factor ** sum(step >= d for d in decay_steps)


def fraction_schedule(steps: int, warmup_fraction: float,
                      decay_fractions: Sequence[float]) -> tuple[int, tuple[int, ...]]:
    """Warmup and decay boundaries as fractions of ``steps`` (VTAB's fine-tuning: 0.08; 0.3, 0.6, 0.9)."""
    return round(steps * warmup_fraction), tuple(round(steps * f) for f in decay_fractions)


def head_capacity(num_classes: int) -> int:
    """Columns of the head: ``num_classes`` rounded up to a power of two, at least 64."""
    return max(MIN_HEAD_CAPACITY, 2 ** math.ceil(math.log2(max(num_classes, 1))))


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """One fine-tuning run.

    ``resize`` is the side training images are resized to before a random
    ``crop``-sided crop (``random_crop=False``: resized straight to ``crop``);
    test images are resized to ``crop``.
    """

    steps: int
    batch_size: int
    lr: float
    warmup: int = 0
    decay_steps: tuple[int, ...] = ()
    crop: int = 224
    resize: Optional[int] = None
    random_crop: bool = False
    flip: bool = False
    mixup_alpha: float = 0.0
    train_batch_norm: bool = True

    def __post_init__(self):
        if self.steps < 1 or self.batch_size < 1 or self.lr < 0 or self.crop < 1:
            raise ConfigError(f"fine-tuning needs steps >= 1, batch_size >= 1, lr >= 0 and crop >= 1; got {self}")
        if self.random_crop and (self.resize or self.crop) < self.crop:
            raise ConfigError(f"fine-tuning: resize {self.resize} is smaller than crop {self.crop}")

    @property
    def train_side(self) -> int:
        return (self.resize or self.crop) if self.random_crop else self.crop


def resize_images(images: np.ndarray, side: int) -> np.ndarray:
    """Bilinear resize of ``[n, h, w, 3]`` images to ``side`` x ``side`` (a copy when the size matches)."""
    images = np.asarray(images, np.float32)
    if images.shape[1:3] == (side, side):
        return images.copy()
    import tensorflow as tf

    return tf.image.resize(images, (side, side), method="bilinear", antialias=True).numpy()


def batch_indices(n: int, batch_size: int, steps: int, rng: np.random.Generator) -> np.ndarray:
    """``[steps, batch_size]`` indices: consecutive reshuffled passes over ``0..n-1`` (epochs)."""
    needed = steps * batch_size
    epochs = -(-needed // n)
    return np.concatenate([rng.permutation(n) for _ in range(epochs)])[:needed].reshape(steps, batch_size)


def augment(images: np.ndarray, crop: int, random_crop: bool, flip: bool, rng: np.random.Generator) -> np.ndarray:
    """Random ``crop`` x ``crop`` crops (else the images as they are) and random horizontal flips."""
    n, side = len(images), images.shape[1]
    if random_crop and side > crop:
        tops, lefts = rng.integers(0, side - crop + 1, size=(2, n))
        images = np.stack([img[t:t + crop, l:l + crop] for img, t, l in zip(images, tops, lefts)])
    if flip:
        mirrored = rng.random(n) < 0.5
        images = np.where(mirrored[:, None, None, None], images[:, :, ::-1], images)
    return images


def mixup(images: np.ndarray, targets: np.ndarray, lam: float, partner: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """MixUp (Zhang et al. 2018): ``lam * x + (1 - lam) * x[partner]``, likewise the one-hot targets."""
    return lam * images + (1 - lam) * images[partner], lam * targets + (1 - lam) * targets[partner]


@dataclasses.dataclass
class FittedModel:
    """The weights of one fine-tuned network (backbone copy + head) and its test-time input side."""

    weights: list[np.ndarray]
    kernel: np.ndarray
    bias: np.ndarray
    num_classes: int
    crop: int
    losses: list[float]


class FineTuner:
    """A trainable copy of a backbone at one input side, reused across fits."""

    def __init__(self, backbone: Backbone, side: int):
        import keras

        self.backbone, self.side = backbone, side
        source = backbone.model
        try:
            if tuple(source.input_shape[1:3]) == (side, side):
                clone = keras.models.clone_model(source)
            else:
                clone = keras.models.clone_model(source, input_tensors=keras.Input((side, side, 3)))
            clone.set_weights(source.get_weights())
        except Exception as e:  # noqa: BLE001 -- any Keras failure means the model cannot run at this size
            raise ConfigError(f"backbone {backbone.id}: cannot build a trainable copy at {side}x{side} px "
                              f"({type(e).__name__}: {e}); cap the resolution at the backbone's "
                              f"{backbone.image_size} px (bit: max_crop={backbone.image_size})") from e
        self.model = keras.Model(clone.input, clone.output["embedding"])
        self.initial = [np.array(w) for w in self.model.get_weights()]
        self.dim = int(self.model.output.shape[-1])
        self._heads: dict[int, Any] = {}
        self._embed = None
        self.loaded: Optional[FittedModel] = None

    # ---- traced pieces ----

    def _head(self, capacity: int) -> dict[str, Any]:
        """Head variables, optimizer and traced train step for one head capacity (built once)."""
        if capacity in self._heads:
            return self._heads[capacity]
        import keras
        import tensorflow as tf

        head = keras.layers.Dense(capacity, kernel_initializer="zeros", name=f"head{capacity}")
        head.build((None, self.dim))
        optimizer = keras.optimizers.SGD(learning_rate=0.0, momentum=MOMENTUM)
        variables = self.model.trainable_variables + head.trainable_variables
        optimizer.build(variables)
        model = self.model

        @tf.function(reduce_retracing=True, autograph=False)
        def train_step(images, targets, logit_mask, training: bool):
            with tf.GradientTape() as tape:
                logits = head(model(images, training=training)) + logit_mask
                loss = tf.reduce_mean(tf.nn.softmax_cross_entropy_with_logits(targets, logits))
            optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
            return loss

        self._heads[capacity] = {"head": head, "optimizer": optimizer, "step": train_step}
        return self._heads[capacity]

    def embed(self, images01: np.ndarray) -> np.ndarray:
        """The current network's embedding of [0, 1] images already at ``side``."""
        import tensorflow as tf

        if self._embed is None:
            model = self.model
            self._embed = tf.function(lambda x: model(x, training=False), reduce_retracing=True, autograph=False)
        out = [self._embed(self.backbone.preprocess(images01[i:i + PREDICT_BATCH])).numpy()
               for i in range(0, len(images01), PREDICT_BATCH)]
        return np.concatenate(out) if out else np.zeros((0, self.dim), np.float32)

    # ---- fit and predict ----

    def train(self, images01: np.ndarray, labels: np.ndarray, num_classes: int, config: TrainConfig,
              seed: int, name: str = "fine-tuning") -> FittedModel:
        """Fine-tune from the backbone's weights on ``images01`` (any size; resized here); returns the weights.

        Raises :class:`Diverged` (a LearnerError) when the loss becomes NaN,
        infinite or larger than ``DIVERGENCE_LOSS`` (the message names the step
        and learning rate), and LearnerError for NaN images or features.
        """
        if config.crop != self.side:
            raise ConfigError(f"{name}: this FineTuner runs at {self.side} px, the config asks for {config.crop}")
        if not np.isfinite(images01).all():
            raise LearnerError(f"{name}: the support images hold NaN or infinite values")
        capacity = head_capacity(num_classes)
        parts = self._head(capacity)
        self.model.set_weights(self.initial)
        parts["head"].set_weights([np.zeros((self.dim, capacity), np.float32), np.zeros(capacity, np.float32)])
        for v in parts["optimizer"].variables:  # momentum buffers (and the step counter) back to zero
            v.assign(np.zeros(v.shape, v.dtype))
        self.loaded = None

        rng = np.random.default_rng(seed)
        mask = np.where(np.arange(capacity) < num_classes, 0.0, MASKED_LOGIT).astype(np.float32)
        one_hot = np.eye(capacity, dtype=np.float32)[labels]
        losses = []
        for step, idx in enumerate(batch_indices(len(images01), config.batch_size, config.steps, rng)):
            images = augment(resize_images(images01[idx], config.train_side), config.crop, config.random_crop,
                             config.flip, rng)
            targets = one_hot[idx]
            if config.mixup_alpha > 0:
                images, targets = mixup(images, targets, float(rng.beta(config.mixup_alpha, config.mixup_alpha)),
                                        rng.permutation(len(idx)))
            lr = learning_rate(step, config.lr, config.warmup, config.decay_steps)
            parts["optimizer"].learning_rate = lr
            loss = float(parts["step"](self.backbone.preprocess(images), targets, mask, config.train_batch_norm))
            if step == 0 and not np.isfinite(loss):  # computed before any update
                raise LearnerError(f"{name}: the loss is {loss} before any update: the backbone's features of "
                                   f"the support images are NaN or infinite")
            if not np.isfinite(loss) or loss > DIVERGENCE_LOSS:
                raise Diverged(f"{name}: the loss diverged ({loss:.3g}) at step {step + 1} of {config.steps} "
                                   f"with learning rate {lr:.3g}; lower the learning rate")
            losses.append(loss)
        kernel, bias = parts["head"].get_weights()
        fitted = FittedModel([np.array(w) for w in self.model.get_weights()], kernel[:, :num_classes].copy(),
                             bias[:num_classes].copy(), num_classes, config.crop, losses)
        self.loaded = fitted
        return fitted

    def logits(self, fitted: FittedModel, images01: np.ndarray) -> np.ndarray:
        """Logits ``[n, num_classes]`` of a fitted model for [0, 1] images (resized to its crop side)."""
        if self.loaded is not fitted:
            self.model.set_weights(fitted.weights)
            self.loaded = fitted
        features = self.embed(resize_images(images01, fitted.crop))
        return (features @ fitted.kernel + fitted.bias).astype(np.float32)


class FineTunedPredictor(Predictor):
    """Logits of one fine-tuned network (the predictor of ``finetune`` and ``bit``)."""

    def __init__(self, tuner: FineTuner, fitted: FittedModel):
        self.tuner, self.fitted = tuner, fitted

    def predict(self, query: Examples) -> np.ndarray:
        return self.tuner.logits(self.fitted, query.images)


class TunerCache:
    """The one :class:`FineTuner` a learner keeps (rebuilt when the input side changes)."""

    def __init__(self, backbone: Backbone):
        self.backbone = backbone
        self._tuner: Optional[FineTuner] = None

    def get(self, side: int) -> FineTuner:
        if self._tuner is None or self._tuner.side != side:
            self._tuner = None  # free the old copy first
            self._tuner = FineTuner(self.backbone, side)
        return self._tuner


def accuracy(tuner: FineTuner, fitted: FittedModel, images01: np.ndarray, labels: np.ndarray) -> float:
    """Fraction of ``images01`` whose arg-max logit is the label."""
    return float((tuner.logits(fitted, images01).argmax(axis=1) == labels).mean())
