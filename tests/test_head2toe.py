"""Head2Toe: each rule on hand-computed cases, selection on a problem whose informative features are known."""

import numpy as np
import pytest

from fewshot_bench.backbones.features import set_default_cache_dir
from fewshot_bench.errors import ConfigError, LearnerError
from fewshot_bench.learners.head2toe import (Head2Toe, default_layers, feature_scores, group_lasso_penalty,
                                             head2toe_pool, normalize_per_layer, pooled_dim, pooling_grid,
                                             select_features, selected_dims, token_groups, train_linear)
from fewshot_bench.tasks import Examples, ValidationSplit


@pytest.mark.parametrize("channels, width, target, grid", [
    (32, 32, 512, 4),     # floor(sqrt(512 / 32)) = 4
    (100, 8, 512, 2),     # floor(sqrt(5.12)) = 2
    (300, 10, 512, 1),    # floor(sqrt(1.7)) = 1: global average
    (512, 4, 512, 1),     # C >= target: global average
    (1280, 2, 512, 1),
    (16, 2, 1024, 2),     # floor(sqrt(64)) = 8, but a 2x2 map is never upsampled
])
def test_pooling_grid(channels, width, target, grid):
    assert pooling_grid(channels, width, target) == grid


@pytest.mark.parametrize("shape, target, dim", [
    ((8, 8, 32), 512, 4 * 4 * 32),    # n = 4, pool 2
    ((7, 7, 32), 512, 7 * 7 * 32),    # n = 4, pool 7 // 4 = 1: the map is kept whole
    ((10, 10, 64), 512, 2 * 2 * 64),  # n = 2, pool 5
    ((4, 4, 1280), 512, 1280),        # global average
    ((6, 2), 6, 3 * 2),               # tokens: m = 3 groups of 2
    ((6, 8), 4, 8),                   # tokens: C >= target
    ((1280,), 512, 1280),             # a vector is kept
])
def test_pooled_dim(shape, target, dim):
    assert pooled_dim(shape, target) == dim


def test_token_groups():
    assert token_groups(2, 6, 6) == 3 and token_groups(2, 6, 100) == 6 and token_groups(8, 6, 4) == 1


def test_head2toe_pool_on_hand_computed_maps():
    import tensorflow as tf

    x = np.zeros((1, 4, 4, 2), np.float32)
    x[0, :, :, 0] = np.arange(16).reshape(4, 4)
    x[0, :, :, 1] = np.arange(16).reshape(4, 4) + 100
    # target 8, C = 2: n = 2, 2x2 blocks, flattened row, column, channel
    np.testing.assert_allclose(head2toe_pool(tf.constant(x), 8).numpy(),
                               [[2.5, 102.5, 4.5, 104.5, 10.5, 110.5, 12.5, 112.5]])
    np.testing.assert_allclose(head2toe_pool(tf.constant(x), 2).numpy(), [[7.5, 107.5]])  # global
    tokens = np.arange(12, dtype=np.float32).reshape(1, 6, 2)  # rows (0,1), (2,3), ... (10,11)
    np.testing.assert_allclose(head2toe_pool(tf.constant(tokens), 6).numpy(), [[1, 2, 5, 6, 9, 10]])
    vector = np.array([[1.0, -2.0, 3.0]], np.float32)
    np.testing.assert_allclose(head2toe_pool(tf.constant(vector), 1).numpy(), vector)


def test_normalize_per_layer_keeps_zero_blocks_zero():
    x = np.array([[3.0, 4.0, 0.0, 0.0, -2.0], [0.0, 1.0, 1.0, 1.0, 0.0]])
    np.testing.assert_allclose(normalize_per_layer(x, [2, 2, 1]),
                               [[0.6, 0.8, 0.0, 0.0, -1.0], [0.0, 1.0, 2 ** -0.5, 2 ** -0.5, 0.0]], rtol=1e-6)
    with pytest.raises(LearnerError, match="sum to 4"):
        normalize_per_layer(x, [2, 2])


def test_select_features_ties_and_zero_scores():
    scores = np.array([0.5, 0.9, 0.0, 0.9, 0.1])
    np.testing.assert_array_equal(select_features(scores, 0.4), [1, 3])     # ceil(2.0) = 2, tie 0.9 kept both
    np.testing.assert_array_equal(select_features(scores, 0.5), [0, 1, 3])  # ceil(2.5) = 3
    np.testing.assert_array_equal(select_features(scores, 1.0), [0, 1, 3, 4])  # the zero-scored one is dropped
    np.testing.assert_array_equal(select_features([0.2, 0.2, 0.2], 0.34), [0, 1])  # ties: lower index first
    with pytest.raises(ConfigError, match="keep_fraction"):
        select_features(scores, 0.0)


def test_selected_dims_counts_per_layer():
    assert selected_dims([2, 3, 1], np.array([0, 3, 4])) == [1, 2]
    assert selected_dims([2, 3, 1], np.array([5])) == [1]


def _known_problem(n=240, d=40, informative=(3, 17, 31), seed=0):
    """Three classes; each informative feature is high for one class, every other feature is noise."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 3
    x = rng.normal(0.0, 1.0, (n, d))
    for c, j in enumerate(informative):
        x[:, j] = 2.0 * (labels == c) + 0.3 * rng.normal(size=n)
    return x.astype(np.float32), labels


def test_group_lasso_scores_find_the_informative_features():
    x, labels = _known_problem()
    weights, _ = train_linear(x, labels, 3, penalty=0.05, steps=300)
    scores = feature_scores(weights)
    np.testing.assert_array_equal(select_features(scores, 3 / 40), [3, 17, 31])
    assert (scores > 0).sum() < 40  # the proximal step zeroes rows exactly
    np.testing.assert_allclose(scores, np.linalg.norm(weights, axis=1))
    # a stronger penalty keeps fewer rows; one strong enough zeroes all
    stronger, _ = train_linear(x, labels, 3, penalty=0.2, steps=300)
    assert group_lasso_penalty(stronger) < group_lasso_penalty(weights)
    assert not feature_scores(train_linear(x, labels, 3, penalty=50.0, steps=50)[0]).any()


def test_unregularised_head_separates_the_known_problem():
    x, labels = _known_problem()
    weights, bias = train_linear(x[:, [3, 17, 31]], labels, 3)
    assert ((x[:, [3, 17, 31]] @ weights + bias).argmax(1) == labels).mean() > 0.95


def test_train_linear_refuses_nan_features():
    x, labels = _known_problem()
    x[5, 2] = np.nan
    with pytest.raises(LearnerError, match="NaN"):
        train_linear(x, labels, 3)


@pytest.fixture(scope="module")
def noisy_backbone():
    """A backbone with a layer of pure noise ("noise"), an informative one ("signal") and an embedding."""
    import keras

    from fewshot_bench.backbones.base import Backbone

    inputs = keras.Input((8, 8, 3))
    signal = keras.layers.AveragePooling2D(2)(inputs)  # [4, 4, 3]
    noise = keras.layers.Conv2D(4, 3, padding="same", kernel_initializer=keras.initializers.Zeros(),
                                bias_initializer=keras.initializers.Constant(1.0))(inputs)  # constant: useless
    model = keras.Model(inputs, {"embedding": keras.layers.Flatten()(inputs), "noise": noise, "signal": signal})
    return Backbone("noisy", model, 8, (0.0, 1.0), ("noise", "signal"), "fixed")


def _digits(digits, idx, prefix="d"):
    images, labels = digits
    return Examples(images[idx], labels[idx], tuple(f"{prefix}{i}" for i in idx))


def test_learner_far_above_chance_with_validation_choice(digits, noisy_backbone):
    learner = Head2Toe(noisy_backbone, target_sizes=(16, 48), keep_fractions=(0.2, 0.5), penalties=(1e-3,))
    assert learner.layers == ("noise", "signal", "embedding") == default_layers(noisy_backbone)
    assert learner.layer_dims(16) == [2 * 2 * 4, 2 * 2 * 3, 192]  # noise: n = 2, pool 4; signal: n = 2, pool 2
    support = _digits(digits, np.arange(500))
    validation = ValidationSplit(_digits(digits, np.arange(400)), _digits(digits, np.arange(400, 500)))
    predictor = learner.fit(support, 10, validation)
    query = _digits(digits, np.arange(1000, 1797))
    logits = predictor.predict(query.unlabelled())
    assert logits.shape == (797, 10)
    assert (logits.argmax(1) == query.labels).mean() > 0.85
    assert learner.chosen["target_size"] in (16, 48) and learner.chosen["keep_fraction"] in (0.2, 0.5)
    assert learner.last_fit_seconds > 0


def test_no_validation_uses_the_defaults_and_cv_runs(digits, noisy_backbone):
    learner = Head2Toe(noisy_backbone, default_target_size=48, default_keep_fraction=0.25, default_penalty=1e-3)
    learner.fit(_digits(digits, np.arange(100)), 10)
    assert learner.chosen["target_size"] == 48 and learner.chosen["keep_fraction"] == 0.25
    assert learner.chosen["features"] <= int(np.ceil(0.25 * learner.chosen["of"]))
    cv = Head2Toe(noisy_backbone, target_sizes=(48,), keep_fractions=(0.05, 0.5), penalties=(1e-3,), cv_folds=3)
    support = _digits(digits, np.arange(150))
    cv.fit(support, 10, ValidationSplit(support.take(np.arange(100)), support.take(np.arange(100, 150))))
    assert cv.chosen["keep_fraction"] in (0.05, 0.5)


def test_layer_dims_match_the_extracted_width(noisy_backbone, digits):
    learner = Head2Toe(noisy_backbone)
    examples = _digits(digits, np.arange(3))
    for target in (4, 16, 1000):
        raw = learner._extractor(target).extract(examples)
        assert raw.shape[1] == sum(learner.layer_dims(target))


def test_a_second_learner_reads_the_persistent_cache(digits, noisy_backbone, tmp_path):
    set_default_cache_dir(tmp_path / "cache")
    try:
        support = _digits(digits, np.arange(60), prefix="cache")
        first = Head2Toe(noisy_backbone, default_target_size=16)
        first.fit(support, 10)
        first._extractor(16).flush()
        second = Head2Toe(noisy_backbone, default_target_size=16)
        second.fit(support, 10)
        assert first._extractor(16).forward_images == 60 and second._extractor(16).forward_images == 0
    finally:
        set_default_cache_dir(None)


def test_bad_input(digits, noisy_backbone):
    learner = Head2Toe(noisy_backbone)
    support = _digits(digits, np.flatnonzero(digits[1][:200] != 3))
    with pytest.raises(LearnerError, match=r"classes \[3\]"):
        learner.fit(support, 10)
    with pytest.raises(LearnerError, match="zeroed every feature"):
        Head2Toe(noisy_backbone, default_penalty=1e3).fit(_digits(digits, np.arange(50)), 10)
    with pytest.raises(ConfigError, match="cv_folds"):
        Head2Toe(noisy_backbone, cv_folds=1)
