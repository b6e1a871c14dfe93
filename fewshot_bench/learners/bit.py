"""BiT fine-tuning: the whole network trained by BiT-HyperRule (Kolesnikov et al. 2020).

Every setting comes from :func:`fewshot_bench.learners.hyperrule.hyperrule`
(resolution from the image area, schedule and MixUp from the support size,
learning rate 0.003 x batch/512) and the crop/flip exceptions from
:func:`~fewshot_bench.learners.hyperrule.augment_flags`; no validation sweep
(BiT trains VTAB-1k tasks on all 1000 examples with the rule). Test images are
resized to the crop side.

What the learner reads from the task: the support size, and from the task's
:class:`~fewshot_bench.tasks.TaskInfo` (the evaluator passes it) the task name
and the original image area, i.e. the median area of the task's images before
they were resized to the evaluator's image size. The gin settings
``task_name`` and ``original_size``, when set, win over the info for every
task of a run.
Without info (``fit`` called directly), the task name is the dataset prefix of
the image ids (``"dsprites/..."`` -> ``"dsprites"``, whose tasks then take the
union of their exceptions) and the area that of the images received; the
latter also when the info does not know the original area.
"""

from __future__ import annotations

import time
from typing import Optional

import gin

from fewshot_bench.errors import ConfigError
from fewshot_bench.learners.base import LEARNERS, Learner, Predictor
from fewshot_bench.learners.hyperrule import BASE_BATCH, BASE_LR, AugmentFlags, HyperParams, augment_flags, hyperrule
from fewshot_bench.learners.training import FineTunedPredictor, TrainConfig, TunerCache
from fewshot_bench.tasks import Examples, TaskInfo, ValidationSplit, check_support


def task_name_from_ids(ids: tuple[str, ...]) -> str:
    """The dataset prefix of image ids ``"<dataset>/<split or class>/<index>"`` ("" when they have none)."""
    return ids[0].split("/")[0] if ids and "/" in ids[0] else ""


@LEARNERS.register("bit")
@gin.configurable
class BiT(Learner):
    """Whole-network fine-tuning with BiT-HyperRule.

    Args:
      batch_size: examples per step (the learning rate scales with it).
      base_lr: learning rate at batch 512.
      max_crop: cap on the crop side (the resize side shrinks in proportion); None = the rule's 128 or 480.
      schedule_scale: multiplies the rule's steps, warmup and decays (small machines); 1.0 = the rule.
      original_size: side of the task's original images, for every task (None: the task info's
        original area, else the area of the images the learner gets).
      task_name: the VTAB task name for the crop/flip exceptions, for every task (None: the task info's
        name, else the dataset prefix of the image ids).
      train_batch_norm: batch norm layers (if any; BiT's ResNets have group norm) use and update
        batch statistics while training; False keeps them in inference mode (short schedules).
    """

    def __init__(self, backbone=None, seed: int = 0, batch_size: int = BASE_BATCH, base_lr: float = BASE_LR,
                 max_crop: Optional[int] = None, schedule_scale: float = 1.0, original_size: Optional[int] = None,
                 task_name: Optional[str] = None, train_batch_norm: bool = True):
        super().__init__(backbone, seed)
        if backbone is None:
            raise ConfigError("bit needs a backbone (--backbone NAME)")
        self.batch_size, self.base_lr, self.max_crop = batch_size, base_lr, max_crop
        self.schedule_scale, self.original_size, self.task_name = schedule_scale, original_size, task_name
        self.train_batch_norm = train_batch_norm
        self.tuners = TunerCache(backbone)
        self.last_fit_seconds: Optional[float] = None
        self.hyperparams: Optional[HyperParams] = None
        self.flags: Optional[AugmentFlags] = None

    def rule_image_area(self, support: Examples, info: Optional[TaskInfo]) -> float:
        """The area BiT-HyperRule reads: ``original_size``, else the info's original area, else the images'."""
        if self.original_size:
            return float(self.original_size ** 2)
        if info is not None and info.original_area is not None:
            return info.original_area
        height, width = support.images.shape[1:3]
        return float(height * width)

    def rule_task_name(self, support: Examples, info: Optional[TaskInfo]) -> str:
        """The task name for the crop/flip exceptions: ``task_name``, else the info's, else the ids' prefix."""
        if self.task_name:
            return self.task_name
        return info.name if info is not None else task_name_from_ids(support.ids)

    def fit(self, support: Examples, num_classes: int, validation: Optional[ValidationSplit] = None,
            info: Optional[TaskInfo] = None) -> Predictor:
        start = time.perf_counter()
        check_support(support, num_classes)
        hp = hyperrule(len(support), self.rule_image_area(support, info), self.batch_size, base_lr=self.base_lr,
                       max_crop=self.max_crop, schedule_scale=self.schedule_scale)
        flags = augment_flags(self.rule_task_name(support, info))
        config = TrainConfig(steps=hp.steps, batch_size=hp.batch_size, lr=hp.lr, warmup=hp.warmup,
                             decay_steps=hp.decay_steps, crop=hp.crop, resize=hp.resize,
                             random_crop=flags.random_crop, flip=flags.flip, mixup_alpha=hp.mixup_alpha,
                             train_batch_norm=self.train_batch_norm)
        self.hyperparams, self.flags = hp, flags
        tuner = self.tuners.get(hp.crop)
        fitted = tuner.train(support.images, support.labels, num_classes, config, self.seed, name="bit")
        self.last_fit_seconds = time.perf_counter() - start
        return FineTunedPredictor(tuner, fitted)
