"""Fine-tuning: the whole network trained from the backbone's weights (VTAB's fine-tuning baseline).

Protocol (Zhai et al. 2019, VTAB; google-research/task_adaptation): a
zero-initialised linear head on the backbone's embedding; every weight
trained with SGD momentum 0.9 on softmax cross-entropy, no weight decay, no
data augmentation, at the backbone's input size; linear warmup over the first
8% of the steps, learning rate x0.1 at 30%, 60% and 90% of them (the
task_adaptation README runs 1000 steps with warmup 80 and decays at 300, 600,
900). Hyper-parameters come from VTAB's lightweight sweep: learning rates
{0.1, 0.01} x steps {2500, 10000} at batch 512, each fitted on train800 and
scored on val200; the best is refit on all 1000 support examples. Tasks with
no validation split (MD episodes) use ``default_lr`` / ``default_steps``
(the VTAB+MD README's episode runs: 0.01, 1000 steps). A sweep point whose
loss diverges is skipped; a divergence in the final fit fails the task.
"""

from __future__ import annotations

import itertools
import time
from typing import Optional, Sequence

import gin

from fewshot_bench.errors import ConfigError, LearnerError
from fewshot_bench.learners.base import LEARNERS, Learner, Predictor
from fewshot_bench.learners.training import (Diverged, FineTunedPredictor, FineTuner, TrainConfig, TunerCache,
                                             accuracy, fraction_schedule)
from fewshot_bench.tasks import Examples, ValidationSplit, check_support


@LEARNERS.register("finetune")
@gin.configurable
class FineTune(Learner):
    """Whole-network fine-tuning with a validation sweep over learning rate x steps.

    Args:
      learning_rates, steps: the sweep (every pair is tried when a task has a validation split).
      batch_size: examples per SGD step.
      default_lr, default_steps: used when a task has no validation split.
      warmup_fraction, decay_fractions: the schedule, as fractions of the steps.
      flip: random horizontal flips (VTAB's protocol: none).
      train_batch_norm: batch norm layers use and update batch statistics while training (VTAB);
        False keeps them in inference mode, which short schedules on small batches need.
    """

    def __init__(self, backbone=None, seed: int = 0, learning_rates: Sequence[float] = (0.1, 0.01),
                 steps: Sequence[int] = (2500, 10000), batch_size: int = 512, default_lr: float = 0.01,
                 default_steps: int = 1000, warmup_fraction: float = 0.08,
                 decay_fractions: Sequence[float] = (0.3, 0.6, 0.9), flip: bool = False,
                 train_batch_norm: bool = True):
        super().__init__(backbone, seed)
        if backbone is None:
            raise ConfigError("finetune needs a backbone (--backbone NAME)")
        if not learning_rates or not steps:
            raise ConfigError("finetune: learning_rates and steps must each name at least one value")
        self.sweep_points = tuple(itertools.product(learning_rates, steps))
        self.batch_size, self.default = batch_size, (default_lr, default_steps)
        self.warmup_fraction, self.decay_fractions, self.flip = warmup_fraction, tuple(decay_fractions), flip
        self.train_batch_norm = train_batch_norm
        self.tuners = TunerCache(backbone)
        self.last_fit_seconds: Optional[float] = None
        self.chosen: Optional[tuple[float, int]] = None
        self.val_accuracy: dict[tuple[float, int], float] = {}

    def config(self, lr: float, steps: int) -> TrainConfig:
        warmup, decays = fraction_schedule(steps, self.warmup_fraction, self.decay_fractions)
        return TrainConfig(steps=steps, batch_size=self.batch_size, lr=lr, warmup=warmup, decay_steps=decays,
                           crop=self.backbone.image_size, flip=self.flip, train_batch_norm=self.train_batch_norm)

    def _select(self, tuner: FineTuner, validation: ValidationSplit, num_classes: int) -> tuple[float, int]:
        """The sweep point with the best val accuracy (the first on ties; diverging points skipped)."""
        self.val_accuracy = {}
        for lr, steps in self.sweep_points:
            try:
                fitted = tuner.train(validation.train.images, validation.train.labels, num_classes,
                                     self.config(lr, steps), self.seed, name=f"finetune (lr={lr}, steps={steps})")
            except Diverged:
                continue
            self.val_accuracy[(lr, steps)] = accuracy(tuner, fitted, validation.val.images, validation.val.labels)
        if not self.val_accuracy:
            raise LearnerError(f"finetune: the loss diverged at every sweep point {list(self.sweep_points)}; "
                               f"add smaller learning rates (FineTune.learning_rates)")
        return max(self.val_accuracy, key=self.val_accuracy.get)  # max() keeps the first of equal values

    def fit(self, support: Examples, num_classes: int,
            validation: Optional[ValidationSplit] = None) -> Predictor:
        start = time.perf_counter()
        check_support(support, num_classes)
        tuner = self.tuners.get(self.backbone.image_size)
        lr, steps = self.default
        if validation is not None and len(self.sweep_points) > 1:
            lr, steps = self._select(tuner, validation, num_classes)
        elif validation is not None:
            lr, steps = self.sweep_points[0]
        self.chosen = (lr, steps)
        fitted = tuner.train(support.images, support.labels, num_classes, self.config(lr, steps), self.seed,
                             name=f"finetune (lr={lr}, steps={steps})")
        self.last_fit_seconds = time.perf_counter() - start
        return FineTunedPredictor(tuner, fitted)
