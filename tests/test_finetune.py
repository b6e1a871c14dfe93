"""Fine-tuning: the shared training loop's rules (hand-computed) and the ``finetune`` learner on tiny data."""

import functools
from pathlib import Path

import numpy as np
import pytest

from fewshot_bench.errors import ConfigError, LearnerError
from fewshot_bench.learners import LEARNERS
from fewshot_bench.learners import training
from fewshot_bench.learners.finetune import FineTune
from fewshot_bench.learners.training import (FineTuner, TrainConfig, augment, batch_indices, fraction_schedule,
                                             head_capacity, learning_rate, mixup)
from fewshot_bench.tasks import Examples, ValidationSplit
from fewshot_bench.testing import check_learner, tiny_backbone, tiny_task

REPO = Path(__file__).resolve().parents[1]
SMALL = dict(learning_rates=(0.1, 0.01), steps=(10, 30), batch_size=16, default_lr=0.1, default_steps=60)


# ---- rules ----

def test_learning_rate_warmup_then_step_decay():
    # BiT's small schedule: warmup 100, decays at 200/300/400, base 0.003.
    lr = functools.partial(learning_rate, base_lr=0.003, warmup=100, decay_steps=(200, 300, 400))
    assert [lr(s) for s in (0, 50, 99)] == pytest.approx([0.0, 0.0015, 0.00297])
    assert [lr(s) for s in (100, 199, 200, 299, 300, 400, 499)] == pytest.approx(
        [0.003, 0.003, 3e-4, 3e-4, 3e-5, 3e-6, 3e-6])
    assert learning_rate(0, 0.1, 0, ()) == 0.1  # no warmup, no decay


def test_fraction_schedule_matches_task_adaptation():
    assert fraction_schedule(1000, 0.08, (0.3, 0.6, 0.9)) == (80, (300, 600, 900))
    assert fraction_schedule(2500, 0.08, (0.3, 0.6, 0.9)) == (200, (750, 1500, 2250))


def test_head_capacity():
    assert [head_capacity(n) for n in (2, 64, 65, 102, 397)] == [64, 64, 128, 128, 512]


def test_batch_indices_are_reshuffled_passes():
    idx = batch_indices(5, 4, 5, np.random.default_rng(0))
    assert idx.shape == (5, 4)
    flat = idx.ravel()
    for epoch in range(4):  # 20 draws = four full passes over 0..4, each a permutation
        assert sorted(flat[5 * epoch:5 * epoch + 5]) == [0, 1, 2, 3, 4]
    np.testing.assert_array_equal(idx, batch_indices(5, 4, 5, np.random.default_rng(0)))


def test_augment_crops_inside_the_image_and_flips():
    images = np.arange(2 * 5 * 5 * 3, dtype=np.float32).reshape(2, 5, 5, 3)
    crops = augment(images, 3, random_crop=True, flip=False, rng=np.random.default_rng(1))
    assert crops.shape == (2, 3, 3, 3)
    for img, crop in zip(images, crops):  # each crop is a window of its own image
        assert any(np.array_equal(img[t:t + 3, l:l + 3], crop) for t in range(3) for l in range(3))
    flipped = augment(images, 5, random_crop=False, flip=True, rng=np.random.default_rng(3))
    for img, out in zip(images, flipped):
        assert np.array_equal(out, img) or np.array_equal(out, img[:, ::-1])
    many = augment(np.repeat(images[:1], 64, axis=0), 5, False, True, np.random.default_rng(0))
    mirrored = sum(np.array_equal(m, images[0, :, ::-1]) for m in many)
    assert 16 < mirrored < 48  # about half
    assert augment(images, 5, random_crop=False, flip=False, rng=np.random.default_rng(0)) is images


def test_mixup_hand_computed():
    images = np.array([[0.0], [1.0], [4.0]], np.float32)
    targets = np.eye(3, dtype=np.float32)
    mixed, soft = mixup(images, targets, 0.75, np.array([1, 2, 0]))
    np.testing.assert_allclose(mixed, [[0.25], [1.75], [3.0]])
    np.testing.assert_allclose(soft, [[0.75, 0.25, 0], [0, 0.75, 0.25], [0.25, 0, 0.75]])


def test_train_config_rejects_bad_values():
    with pytest.raises(ConfigError, match="steps >= 1"):
        TrainConfig(steps=0, batch_size=8, lr=0.1)
    with pytest.raises(ConfigError, match="smaller than crop"):
        TrainConfig(steps=1, batch_size=8, lr=0.1, crop=8, resize=6, random_crop=True)


# ---- the learner ----

@pytest.fixture(scope="module")
def tiny():
    return tiny_backbone(8)


def _examples(images, labels, idx, prefix="digits/train/"):
    return Examples(images[idx], labels[idx], tuple(f"{prefix}{i}" for i in idx))


def test_registered_and_conforms(tiny):
    assert LEARNERS.get("finetune") is FineTune
    report = check_learner(functools.partial(FineTune, **SMALL), backbone=tiny)
    assert report.accuracy[11] > 0.9


def test_sweep_on_val_then_refit_far_above_chance_on_digits(digits, tiny):
    images, labels = digits
    support = _examples(images, labels, np.arange(500))
    validation = ValidationSplit(_examples(images, labels, np.arange(400)), _examples(images, labels,
                                                                                    np.arange(400, 500)))
    query = _examples(images, labels, np.arange(1000, 1797))
    learner = FineTune(tiny, learning_rates=(1e-5, 0.1), steps=(150,), batch_size=32)
    predictor = learner.fit(support, 10, validation)
    assert set(learner.val_accuracy) == {(1e-5, 150), (0.1, 150)}
    assert learner.val_accuracy[(0.1, 150)] > learner.val_accuracy[(1e-5, 150)] + 0.3
    assert learner.chosen == (0.1, 150)
    assert learner.last_fit_seconds > 0
    logits = predictor.predict(query.unlabelled())
    assert logits.shape == (797, 10)
    assert (logits.argmax(1) == query.labels).mean() > 0.8  # chance 0.1


def test_a_predictor_keeps_its_weights_after_later_fits(tiny):
    a, b = tiny_task(3, seed=1), tiny_task(4, seed=2)
    learner = FineTune(tiny, **SMALL)
    first = learner.fit(a.support, 3)
    before = first.predict(a.query.unlabelled())
    learner.fit(b.support, 4).predict(b.query.unlabelled())
    np.testing.assert_array_equal(first.predict(a.query.unlabelled()), before)


def test_nan_images_and_divergence_fail_the_task_clearly(tiny):
    task = tiny_task(3, seed=4)
    bad = Examples(task.support.images.copy(), task.support.labels, task.support.ids)
    bad.images[0, 0, 0, 0] = np.nan
    with pytest.raises(LearnerError, match="NaN"):
        FineTune(tiny, **SMALL).fit(bad, 3)
    with pytest.raises(LearnerError, match="diverged .* lower the learning rate"):
        FineTune(tiny, **{**SMALL, "default_lr": 1e6}).fit(task.support, 3)
    broken = tiny_backbone(8, seed=9)
    layer = broken.model.get_layer("embedding")
    layer.set_weights([np.full_like(w, np.nan) for w in layer.get_weights()])
    with pytest.raises(LearnerError, match="before any update: the backbone's features .* NaN"):
        FineTune(broken, **SMALL).fit(task.support, 3)


def test_sweep_skips_diverging_points_and_fails_when_all_diverge(tiny):
    task = tiny_task(3, seed=5, validation=True)
    learner = FineTune(tiny, **{**SMALL, "learning_rates": (1e6, 0.1), "steps": (30,)})
    learner.fit(task.support, 3, task.validation)
    assert learner.chosen == (0.1, 30) and set(learner.val_accuracy) == {(0.1, 30)}
    with pytest.raises(LearnerError, match="every sweep point"):
        FineTune(tiny, **{**SMALL, "learning_rates": (1e6, 1e7)}).fit(task.support, 3, task.validation)


def _batch_norm_backbone():
    import keras

    from fewshot_bench.backbones.base import Backbone

    inputs = keras.Input((8, 8, 3))
    x = keras.layers.BatchNormalization(name="bn")(keras.layers.Conv2D(4, 3, name="conv")(inputs))
    model = keras.Model(inputs, {"embedding": keras.layers.GlobalAveragePooling2D()(x)})
    return Backbone("bn_tiny", model, 8, (0.0, 1.0), (), "bn")


@pytest.mark.parametrize("train_batch_norm", [True, False])
def test_batch_norm_statistics_move_only_in_train_mode(train_batch_norm):
    backbone = _batch_norm_backbone()
    tuner = FineTuner(backbone, 8)
    task = tiny_task(3, seed=6)
    config = TrainConfig(steps=5, batch_size=4, lr=0.0, crop=8, train_batch_norm=train_batch_norm)
    fitted = tuner.train(task.support.images, task.support.labels, 3, config, seed=0)
    moving_mean = backbone.model.get_layer("bn").moving_mean.numpy()
    index = [w.path for w in tuner.model.weights].index(tuner.model.get_layer("bn").moving_mean.path)
    assert np.array_equal(fitted.weights[index], moving_mean) != train_batch_norm
    np.testing.assert_array_equal(backbone.model.get_layer("bn").moving_mean.numpy(), np.zeros(4))


def test_mixup_is_applied_when_configured(tiny, monkeypatch):
    calls = []
    monkeypatch.setattr(training, "mixup", lambda *args: calls.append(args[2]) or mixup(*args))
    task = tiny_task(3, seed=7)
    config = TrainConfig(steps=4, batch_size=4, lr=0.01, crop=8, mixup_alpha=0.1)
    FineTuner(tiny, 8).train(task.support.images, task.support.labels, 3, config, seed=0)
    assert len(calls) == 4 and all(0.0 <= lam <= 1.0 for lam in calls)


@pytest.mark.parametrize("gin_file, batch, sweep, default, train_batch_norm", [
    ("gin/learners/finetune.gin", 32, [(0.003, 50), (0.003, 200), (0.001, 50), (0.001, 200)], (0.001, 50), False),
    ("gin/learners/finetune_paper.gin", 512, [(0.1, 2500), (0.1, 10000), (0.01, 2500), (0.01, 10000)],
     (0.01, 1000), True)])
def test_gin_presets(gin_file, batch, sweep, default, train_batch_norm, tiny):
    import gin

    path = REPO / gin_file
    assert path.read_text().startswith("# Used by:  fewshot-bench evaluate --suite ")
    try:
        with gin.unlock_config():
            gin.parse_config_file(str(path))
        learner = FineTune(tiny)
    finally:
        gin.clear_config()
    assert (learner.batch_size, list(learner.sweep_points), learner.default) == (batch, sweep, default)
    assert learner.train_batch_norm == train_batch_norm
    assert learner.config(0.1, 1000).warmup == 80 and learner.config(0.1, 1000).decay_steps == (300, 600, 900)
