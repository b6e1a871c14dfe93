"""BiT-HyperRule (Kolesnikov et al. 2020, "Big Transfer", Sec. 3.3): fine-tuning settings from the task alone.

The rule, as published (and as in google-research/big_transfer's ``bit_hyperrule``):

- resolution: images whose area is below 96x96 pixels are resized to 160 and
  randomly cropped to 128; larger ones are resized to 512 and cropped to 480;
- schedule by training-set size: under 20k examples 500 steps (warmup 100,
  learning rate x0.1 at 200, 300, 400); under 500k 10k steps (warmup 500,
  decays at 3k, 6k, 9k); otherwise 20k steps (warmup 500, decays at 6k, 12k, 18k);
- SGD with momentum 0.9, base learning rate 0.003 at batch 512 (scaled
  linearly with the batch size), no weight decay, zero-initialised head;
- MixUp with alpha = 0.1 from 20k examples up, none below;
- random crop and horizontal flip, except where they destroy the label
  ("if the label requires predicting object orientation or coordinates in
  pixel space ... we omit flipping or cropping when appropriate", Sec. 3.3).

Two knobs let small machines run the rule: ``max_crop`` caps the crop side
(the resize side shrinks in proportion) and ``schedule_scale`` scales every
step count. Both default to the published rule.
"""

from __future__ import annotations

import dataclasses
import re

from fewshot_bench.errors import ConfigError

SMALL_IMAGE_AREA = 96 * 96
SMALL_RESOLUTION = (160, 128)   # (resize, crop) for images with area below 96x96
LARGE_RESOLUTION = (512, 480)
SMALL_DATASET, MEDIUM_DATASET = 20_000, 500_000
# (steps, warmup, decay boundaries) per dataset-size regime.
SMALL_SCHEDULE = (500, 100, (200, 300, 400))
MEDIUM_SCHEDULE = (10_000, 500, (3_000, 6_000, 9_000))
LARGE_SCHEDULE = (20_000, 500, (6_000, 12_000, 18_000))
BASE_LR, BASE_BATCH = 0.003, 512
MIXUP_ALPHA = 0.1


@dataclasses.dataclass(frozen=True)
class HyperParams:
    """What BiT-HyperRule prescribes for one task."""

    resize: int                      # side the training images are resized to
    crop: int                        # side of the random crop (and of test images)
    steps: int
    warmup: int                      # linear warmup steps
    decay_steps: tuple[int, ...]     # the learning rate is multiplied by 0.1 at each
    lr: float                        # base learning rate (after the batch-size scaling)
    mixup_alpha: float               # 0.0: no MixUp
    batch_size: int


def _scaled(n: int, scale: float) -> int:
    return max(1, round(n * scale))


def hyperrule(train_size: int, image_area: float, batch_size: int = BASE_BATCH, *, base_lr: float = BASE_LR,
              max_crop: int | None = None, schedule_scale: float = 1.0) -> HyperParams:
    """BiT-HyperRule's settings for a training set of ``train_size`` images of ``image_area`` pixels.

    Args:
      train_size: number of training examples (VTAB-1k: 1000; an MD episode: its support size).
      image_area: height x width of the task's original images.
      batch_size: the learning rate is ``base_lr * batch_size / 512``.
      max_crop: if set and smaller than the rule's crop, the crop becomes
        ``max_crop`` and the resize side shrinks by the same factor.
      schedule_scale: multiplies steps, warmup and decay boundaries (1.0 = the rule).
    """
    if train_size < 1:
        raise ConfigError(f"BiT-HyperRule: train_size must be positive, got {train_size}")
    if image_area <= 0:
        raise ConfigError(f"BiT-HyperRule: image_area must be positive, got {image_area}")
    if batch_size < 1 or schedule_scale <= 0 or (max_crop is not None and max_crop < 1):
        raise ConfigError(f"BiT-HyperRule: batch_size ({batch_size}), schedule_scale ({schedule_scale}) and "
                          f"max_crop ({max_crop}) must be positive")
    resize, crop = SMALL_RESOLUTION if image_area < SMALL_IMAGE_AREA else LARGE_RESOLUTION
    if max_crop is not None and max_crop < crop:
        resize, crop = round(resize * max_crop / crop), max_crop
    if train_size < SMALL_DATASET:
        steps, warmup, decays = SMALL_SCHEDULE
    elif train_size < MEDIUM_DATASET:
        steps, warmup, decays = MEDIUM_SCHEDULE
    else:
        steps, warmup, decays = LARGE_SCHEDULE
    if schedule_scale != 1.0:
        steps, warmup = _scaled(steps, schedule_scale), _scaled(warmup, schedule_scale)
        decays = tuple(_scaled(d, schedule_scale) for d in decays)
    return HyperParams(resize=resize, crop=crop, steps=steps, warmup=warmup, decay_steps=tuple(decays),
                       lr=base_lr * batch_size / BASE_BATCH,
                       mixup_alpha=0.0 if train_size < SMALL_DATASET else MIXUP_ALPHA, batch_size=batch_size)


@dataclasses.dataclass(frozen=True)
class AugmentFlags:
    """Which label-preserving augmentations a task allows."""

    random_crop: bool = True
    flip: bool = True


# Exceptions to "random crop and horizontal flip", by the label's meaning. The
# VTAB-1k tasks they hit:
#   count       -> no crop:          clevr(task='count_all')
#   position    -> no crop, no flip: dsprites(predicted_attribute='label_x_position', ...)
#                  (a crop moves the object in pixel space, a flip mirrors its x)
#   orientation -> no flip:          dsprites(predicted_attribute='label_orientation', ...)
#   azimuth     -> no flip:          smallnorb(predicted_attribute='label_azimuth')
# Distances (clevr, kitti, dmlab) and elevation survive both. A name without a
# task attribute (a bare dataset name, as in image ids) takes the union of the
# exceptions of that dataset's tasks.
_NO_CROP, _NO_FLIP = AugmentFlags(random_crop=False), AugmentFlags(flip=False)
_NEITHER = AugmentFlags(random_crop=False, flip=False)
ATTRIBUTE_RULES = {"count": _NO_CROP, "position": _NEITHER, "location": _NEITHER, "orientation": _NO_FLIP,
                   "azimuth": _NO_FLIP}
TASK_ATTRIBUTES = set(ATTRIBUTE_RULES) | {"distance", "elevation"}
DATASET_RULES = {"dsprites": _NEITHER, "clevr": _NO_CROP, "smallnorb": _NO_FLIP}


def augment_flags(task_name: str) -> AugmentFlags:
    """Random crop / horizontal flip allowed for a task, by BiT's rule (Sec. 3.3; table above).

    ``task_name`` is a VTAB task name (``"clevr(task='count_all')"``), a
    ``mini`` task name (``"mini_dsprites_location"``) or a dataset name
    (``"dsprites"``). Tasks without an exception (natural and specialized
    tasks, MD sources) get both augmentations.
    """
    words = set(re.findall(r"[a-z]+", task_name.lower()))
    attributes = words & TASK_ATTRIBUTES
    rules = [ATTRIBUTE_RULES[w] for w in attributes if w in ATTRIBUTE_RULES] if attributes else \
        [DATASET_RULES[w] for w in words if w in DATASET_RULES]
    return AugmentFlags(random_crop=all(r.random_crop for r in rules), flip=all(r.flip for r in rules))
