import numpy as np
import pytest

from fewshot_bench.backbones.features import FeatureExtractor
from fewshot_bench.learners.linear_probe import LinearProbe, select_by_validation
from fewshot_bench.tasks import Examples, ValidationSplit


def _split(images, labels, idx, prefix="d"):
    return Examples(images[idx], labels[idx], tuple(f"{prefix}{i}" for i in idx))


def test_select_by_validation_takes_best_and_first_on_ties():
    assert select_by_validation([0.1, 1.0, 10.0], {0.1: 0.5, 1.0: 0.9, 10.0: 0.9}.get) == 1.0


def test_linear_probe_far_above_chance_on_digits(digits, flat_backbone):
    images, labels = digits
    support = _split(images, labels, np.arange(0, 500))
    validation = ValidationSplit(_split(images, labels, np.arange(0, 400)),
                                 _split(images, labels, np.arange(400, 500)))
    query = _split(images, labels, np.arange(1000, 1797))
    learner = LinearProbe(flat_backbone, c_grid=(0.001, 0.1, 1.0))
    predictor = learner.fit(support, 10, validation)
    logits = predictor.predict(query.unlabelled())
    assert logits.shape == (797, 10)
    accuracy = (logits.argmax(1) == query.labels).mean()
    assert accuracy > 0.85  # chance is 0.1
    assert learner.chosen_c in (0.1, 1.0)  # 0.001 underfits badly on val


def test_feature_cache_computes_each_image_once(digits, flat_backbone):
    images, labels = digits
    extractor = FeatureExtractor(flat_backbone, layers=("embedding", "pool"), batch_size=16)
    a = _split(images, labels, np.arange(0, 40))
    first = extractor.extract(a)
    assert first.shape == (40, 8 * 8 * 3 + 3)
    again = extractor.extract(Examples.concat([a.take([3, 3]), _split(images, labels, np.arange(40, 50))]))
    assert extractor.forward_images == 50
    np.testing.assert_allclose(again[0], first[3])
    np.testing.assert_allclose(first[:, -3:], images[:40].mean(axis=(1, 2)), rtol=1e-5)


def test_binary_task_gives_two_logits(digits, flat_backbone):
    images, labels = digits
    idx = np.flatnonzero(labels < 2)
    binary = Examples(images[idx], labels[idx], tuple(f"b{i}" for i in idx))
    predictor = LinearProbe(flat_backbone, c_grid=(1.0,)).fit(binary.take(np.arange(100)), 2)
    logits = predictor.predict(binary.take(np.arange(100, 300)).unlabelled())
    assert logits.shape == (200, 2)
    assert (logits.argmax(1) == binary.labels[100:300]).mean() > 0.95
