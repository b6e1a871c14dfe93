"""The ``bit`` learner: BiT-HyperRule applied to a task, on tiny data."""

import functools
from pathlib import Path

import numpy as np
import pytest

from fewshot_bench.errors import ConfigError, LearnerError
from fewshot_bench.learners import LEARNERS
from fewshot_bench.learners.bit import BiT, task_name_from_ids
from fewshot_bench.evaluation.evaluator import run_task
from fewshot_bench.learners.hyperrule import AugmentFlags, hyperrule
from fewshot_bench.tasks import Examples, QueryStream, Task, TaskInfo
from fewshot_bench.testing import check_learner, tiny_backbone, tiny_task

# The rule's 500 steps scaled to 100, lr 3.2 * 16/512 = 0.1: enough for tiny tasks in a second.
SMALL = dict(batch_size=16, max_crop=8, schedule_scale=0.2, base_lr=3.2)


@pytest.fixture(scope="module")
def tiny():
    return tiny_backbone(8)


def _conv_backbone(size: int):
    """A fully convolutional backbone (global average pooling), so it also runs at other sizes."""
    import keras

    from fewshot_bench.backbones.base import Backbone

    inputs = keras.Input((size, size, 3))
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="conv")(inputs)
    model = keras.Model(inputs, {"embedding": keras.layers.GlobalAveragePooling2D()(x)})
    return Backbone("conv_tiny", model, size, (-1.0, 1.0), (), "conv")


def test_registered_and_conforms_with_crop_and_flip(tiny):
    # tiny tasks' ids name no dataset, so crop and flip are both on: colour survives them.
    assert LEARNERS.get("bit") is BiT
    report = check_learner(functools.partial(BiT, **SMALL), backbone=tiny)
    assert report.accuracy[11] > 0.7


# One training step: these tests check which settings the rule picks, not what training learns.
ONE_STEP = {**SMALL, "schedule_scale": 0.002}
ORIENTATION = "mini_dsprites_orientation"


def _dsprites_like_task(side: int, info: TaskInfo) -> Task:
    """A 3-way tiny task upsampled to ``side`` px (the evaluator's image size), with dSprites-style ids."""
    base = tiny_task(3, seed=6)

    def upsampled(examples: Examples, role: str) -> Examples:
        images = np.repeat(np.repeat(examples.images, side // 8, axis=1), side // 8, axis=2)
        return Examples(images, examples.labels, tuple(f"mini_dsprites/{role}/{i}" for i in range(len(examples))))

    return Task(upsampled(base.support, "train"), QueryStream.from_examples(upsampled(base.query, "test")), 3,
                "mini", "structured", ORIENTATION, ORIENTATION, 0, info=info)


def test_evaluator_gives_bit_the_task_name_and_original_area(tiny):
    # 28x28 images evaluated at 128 px: the rule reads 28x28 (small: 160/128, capped to 10/8), not 128x128
    # (large: 512/480 -> 9/8); the orientation task keeps the crop and drops the flip, where the ids'
    # "mini_dsprites" would drop both
    task = _dsprites_like_task(128, TaskInfo(ORIENTATION, "vtab", 28 * 28))
    learner = BiT(tiny, **ONE_STEP)
    assert run_task(learner, task).total == 9  # 3 queries per class
    assert learner.hyperparams == hyperrule(6, 28 * 28, 16, base_lr=3.2, max_crop=8, schedule_scale=0.002)
    assert (learner.hyperparams.resize, learner.hyperparams.crop, learner.hyperparams.steps) == (10, 8, 1)
    assert learner.flags == AugmentFlags(random_crop=True, flip=False)


def test_original_area_not_the_evaluator_size_picks_the_resolution(tiny):
    task = _dsprites_like_task(64, TaskInfo(ORIENTATION, "vtab", 200 * 200))
    learner = BiT(tiny, **ONE_STEP)
    learner.fit(task.support, 3, info=task.info)
    assert (learner.hyperparams.resize, learner.hyperparams.crop) == (9, 8)   # large: round(512 * 8/480)
    learner.fit(task.support, 3)   # no info (a direct call): the 64 px images and the ids' dataset
    assert (learner.hyperparams.resize, learner.hyperparams.crop) == (10, 8)  # small: 160 * 8/128
    assert learner.flags == AugmentFlags(random_crop=False, flip=False)
    # the gin overrides win over the info
    overridden = BiT(tiny, **{**ONE_STEP, "original_size": 20, "task_name": "dtd"})
    overridden.fit(task.support, 3, info=task.info)
    assert (overridden.hyperparams.resize, overridden.flags) == (10, AugmentFlags(True, True))


def test_task_name_from_ids():
    assert task_name_from_ids(("mini_dsprites/train/3", "mini_dsprites/train/4")) == "mini_dsprites"
    assert task_name_from_ids(("omniglot/12/3",)) == "omniglot"
    assert task_name_from_ids(("tiny-1a2b",)) == ""
    assert task_name_from_ids(()) == ""


def test_applies_the_rule_far_above_chance_on_digits(digits, tiny):
    images, labels = digits
    idx, test = np.arange(500), np.arange(1000, 1797)
    support = Examples(images[idx], labels[idx], tuple(f"mini_dsprites/train/{i}" for i in idx))
    learner = BiT(tiny, **SMALL)
    predictor = learner.fit(support, 10)
    # 500 examples of 8x8 images: the small regime and resolution, capped at 8 px, scaled to 100 steps.
    assert learner.hyperparams == hyperrule(500, 64, 16, base_lr=3.2, max_crop=8, schedule_scale=0.2)
    assert (learner.hyperparams.steps, learner.hyperparams.resize, learner.hyperparams.mixup_alpha) == (100, 10, 0.0)
    assert learner.flags == AugmentFlags(random_crop=False, flip=False)  # a dSprites id: position/orientation
    assert learner.last_fit_seconds > 0
    logits = predictor.predict(Examples(images[test], None, tuple(f"q{i}" for i in test)))
    assert logits.shape == (797, 10)
    assert (logits.argmax(1) == labels[test]).mean() > 0.8  # chance 0.1


def test_medium_regime_turns_mixup_on(tiny):
    base = tiny_task(4, seed=3)
    reps = -(-20_000 // len(base.support))
    idx = np.tile(np.arange(len(base.support)), reps)[:20_000]
    support = Examples(base.support.images[idx], base.support.labels[idx], tuple(f"big/{i}" for i in range(20_000)))
    learner = BiT(tiny, **{**SMALL, "schedule_scale": 0.005})
    predictor = learner.fit(support, 4)
    assert (learner.hyperparams.steps, learner.hyperparams.warmup, learner.hyperparams.mixup_alpha) == (50, 2, 0.1)
    assert learner.hyperparams.decay_steps == (15, 30, 45)
    assert (predictor.predict(base.query.unlabelled()).argmax(1) == base.query.labels).mean() > 0.5  # chance 0.25


def test_trains_and_predicts_at_the_crop_side():
    backbone = _conv_backbone(8)
    task = tiny_task(3, seed=4, image_size=8)
    learner = BiT(backbone, **{**SMALL, "max_crop": 16, "task_name": "dtd"})
    predictor = learner.fit(task.support, 3)
    assert (learner.hyperparams.resize, learner.hyperparams.crop) == (20, 16)  # 160/128 capped at 16
    assert learner.tuners.get(16).model.input_shape == (None, 16, 16, 3)
    assert backbone.model.input_shape == (None, 8, 8, 3)  # the shared backbone is untouched
    assert predictor.predict(task.query.unlabelled()).shape == (len(task.query), 3)


def test_uncappable_backbone_and_bad_support_fail_clearly(tiny):
    task = tiny_task(3, seed=5)
    with pytest.raises(ConfigError, match="max_crop=8"):
        BiT(tiny, **{**SMALL, "max_crop": 16}).fit(task.support, 3)  # its Dense layer fixes the input at 8 px
    with pytest.raises(LearnerError, match="no support example"):
        BiT(tiny, **SMALL).fit(task.support, 4)


@pytest.mark.parametrize("gin_file, expected", [
    ("gin/learners/bit.gin", dict(batch_size=32, base_lr=0.05, max_crop=64, schedule_scale=0.4,
                                  train_batch_norm=False)),
    ("gin/learners/bit_paper.gin", dict(batch_size=512, base_lr=0.003, max_crop=None, schedule_scale=1.0,
                                        train_batch_norm=True))])
def test_gin_presets(gin_file, expected, tiny):
    import gin

    path = Path(__file__).resolve().parents[1] / gin_file
    assert path.read_text().startswith("# Used by:  fewshot-bench evaluate --suite ")
    try:
        with gin.unlock_config():
            gin.parse_config_file(str(path))
        learner = BiT(tiny)
    finally:
        gin.clear_config()
    assert {key: getattr(learner, key) for key in expected} == expected
