"""The conformance kit: built-in learners pass it; deliberately broken learners fail it, precisely."""

import time

import numpy as np
import pytest

from fewshot_bench.errors import ConfigError, LearnerError
from fewshot_bench.learners import LEARNERS
from fewshot_bench.learners.base import Learner, Predictor
from fewshot_bench.tasks import check_support
from fewshot_bench.testing import CHECKS, ConformanceError, check_learner, tiny_backbone, tiny_task

BUILT_IN = [name for name in LEARNERS.names() if LEARNERS.origin(name).startswith("built-in")]
# Fine-tuning learners default to the published schedules (thousands of steps at 128+ px); on the
# kit's 8-px tiny backbone they run with small settings of the same code.
TINY_SETTINGS = {
    "finetune": "finetune(learning_rates=(0.1, 0.01), steps=(10, 30), batch_size=16, default_lr=0.1, "
                "default_steps=60)",
    "bit": "bit(batch_size=16, max_crop=8, schedule_scale=0.2, base_lr=3.2)",
}


@pytest.mark.parametrize("name", BUILT_IN)
def test_built_in_learner_conforms(name):
    report = check_learner(TINY_SETTINGS.get(name, name))
    assert set(report.seconds) == set(CHECKS)
    assert min(report.accuracy.values()) > 0.9  # classes of the tiny tasks are well separated


# ---- a correct learner on raw pixels (no TensorFlow), and broken variants of it ----

class _Centroids(Predictor):
    def __init__(self, centroids):
        self.centroids = centroids

    def predict(self, query):
        x = query.images.reshape(len(query), -1)
        return -((x[:, None, :] - self.centroids[None]) ** 2).sum(-1)


class PixelCentroid(Learner):
    def centroids(self, support, num_classes):
        check_support(support, num_classes)
        x = support.images.reshape(len(support), -1)
        return np.stack([x[support.labels == c].mean(0) for c in range(num_classes)])

    def fit(self, support, num_classes, validation=None):
        return _Centroids(self.centroids(support, num_classes))


def test_a_correct_pixel_learner_passes_every_check():
    report = check_learner(PixelCentroid)
    assert report.accuracy == {2: 1.0, 3: 1.0, 11: 1.0}


def _fails(learner, check, message, **kwargs):
    """Run every check; the first failure must be ``check`` with ``message``."""
    with pytest.raises(ConformanceError) as err:
        check_learner(learner, **kwargs)
    assert f"learner {getattr(learner, '__qualname__', learner)} fails the {check!r} conformance check" in str(
        err.value)
    assert message in str(err.value), str(err.value)
    return str(err.value)


class _ExtraColumn(_Centroids):
    def predict(self, query):
        return np.concatenate([super().predict(query), np.zeros((len(query), 1))], axis=1)


class WrongShape(PixelCentroid):
    def fit(self, support, num_classes, validation=None):
        return _ExtraColumn(self.centroids(support, num_classes))


def test_wrong_output_shape_fails_shapes():
    _fails(WrongShape, "shapes", "predict returned logits of shape (1, 3) for a batch of 1 query images of a "
           "2-way task; expected (1, 2)")


class _Votes(_Centroids):
    def predict(self, query):
        return np.eye(len(self.centroids), dtype=np.int64)[super().predict(query).argmax(1)]


class IntegerLogits(PixelCentroid):
    def fit(self, support, num_classes, validation=None):
        return _Votes(self.centroids(support, num_classes))


def test_integer_logits_fail_shapes():
    _fails(IntegerLogits, "shapes", "logits of dtype int64; expected floating-point scores")


class _Peeking(_Centroids):
    def predict(self, query):
        logits = super().predict(query)
        if query.labels is not None:  # "free" accuracy whenever labels are left on the query
            logits[np.arange(len(query)), query.labels] += 1e6
        return logits


class PeeksAtQueryLabels(PixelCentroid):
    def fit(self, support, num_classes, validation=None):
        return _Peeking(self.centroids(support, num_classes))


def test_peeking_at_query_labels_is_caught():
    _fails(PeeksAtQueryLabels, "hidden_query_labels",
           "the logits change when the query examples carry true labels: predict reads query labels")


class _Refusing(_Centroids):
    def predict(self, query):
        assert query.labels is None, "query labels must be hidden"
        return super().predict(query)


class RefusesLabelledQueries(PixelCentroid):
    def fit(self, support, num_classes, validation=None):
        return _Refusing(self.centroids(support, num_classes))


def test_refusing_labelled_queries_is_not_peeking():
    check_learner(RefusesLabelledQueries, checks=["hidden_query_labels"])


class SortsLabelsAsText(PixelCentroid):
    """Orders its classes as sorted(str(label)): right up to 10 ways, wrong from 11."""

    def fit(self, support, num_classes, validation=None):
        centroids = self.centroids(support, num_classes)
        order = sorted(range(num_classes), key=str)
        return _Centroids(centroids[order])


def test_label_to_column_mixup_fails_labels_on_eleven_ways():
    message = _fails(SortsLabelsAsText, "labels", "Do labels 0..10 map to logit columns 0..10?")
    assert "2->3" in message  # class 2's images land in column 3 (the centroid of class 2)


class Unseeded(PixelCentroid):
    def fit(self, support, num_classes, validation=None):
        noise = np.random.default_rng().normal(0, 0.01, (num_classes, support.images[0].size))
        return _Centroids(self.centroids(support, num_classes) + noise)


def test_unseeded_randomness_fails_determinism():
    _fails(Unseeded, "determinism", "two learners built with seed=0 gave different logits on the same 3-way")


class OneGeneratorForAllFits(PixelCentroid):
    def __init__(self, backbone=None, seed=0):
        super().__init__(backbone, seed)
        self.rng = np.random.default_rng(seed)

    def fit(self, support, num_classes, validation=None):
        noise = self.rng.normal(0, 0.01, (num_classes, support.images[0].size))
        return _Centroids(self.centroids(support, num_classes) + noise)


def test_state_carried_between_fits_fails_determinism():
    _fails(OneGeneratorForAllFits, "determinism", "fitting another task first changed the logits")


class _Drifting(_Centroids):
    def predict(self, query):
        self.centroids = self.centroids + 0.01
        return super().predict(query)


class DriftingPredictor(PixelCentroid):
    def fit(self, support, num_classes, validation=None):
        return _Drifting(self.centroids(support, num_classes))


def test_stateful_predict_fails():
    _fails(DriftingPredictor, "hidden_query_labels", "predict gave other logits for the same query on a second call")


class NormalisesInPlace(PixelCentroid):
    def fit(self, support, num_classes, validation=None):
        support.images[...] -= support.images.mean()
        return super().fit(support, num_classes, validation)


def test_changing_the_support_in_place_fails_side_effects():
    _fails(NormalisesInPlace, "side_effects", "fit changed the support images or labels in place",
           checks=["side_effects"])


class FineTunesSharedBackbone(PixelCentroid):
    def fit(self, support, num_classes, validation=None):
        self.backbone.model.set_weights([w * 1.01 for w in self.backbone.model.get_weights()])
        return super().fit(support, num_classes, validation)


def test_changing_the_backbone_fails_side_effects():
    _fails(FineTunesSharedBackbone, "side_effects", "fit changed the backbone's weights in place",
           checks=["side_effects"])


class NoSupportCheck(PixelCentroid):
    def centroids(self, support, num_classes):
        x = support.images.reshape(len(support), -1)
        return np.stack([x[support.labels == c].mean(0) for c in range(num_classes)])


def test_unchecked_support_fails_bad_support():
    _fails(NoSupportCheck, "bad_support", "for an empty support set; raise fewshot_bench.errors.LearnerError",
           checks=["bad_support"])


class Lenient(PixelCentroid):
    def centroids(self, support, num_classes):
        x = support.images.reshape(len(support), support.images[0].size if len(support) else 0)
        return np.stack([x[support.labels == c].sum(0) for c in range(num_classes)])


def test_accepting_a_bad_support_set_fails_bad_support():
    _fails(Lenient, "bad_support", "fit accepted an empty support set", checks=["bad_support"])


class OnlyEmptyChecked(Lenient):
    def fit(self, support, num_classes, validation=None):
        if len(support) == 0:
            raise LearnerError("empty support")
        return super().fit(support, num_classes, validation)


def test_a_missing_class_must_be_refused_too():
    _fails(OnlyEmptyChecked, "bad_support", "fit accepted a support set holding only class 0 of a 2-way task",
           checks=["bad_support"])


class Slow(PixelCentroid):
    def fit(self, support, num_classes, validation=None):
        time.sleep(0.3)
        return super().fit(support, num_classes, validation)


def test_too_slow_fails_time():
    _fails(Slow, "time", "s; the limit is 0.05 s", checks=["time"], max_seconds=0.05)


def test_interface_problems_are_named():
    def needs_an_argument(backbone, seed, width):
        return PixelCentroid(backbone, seed)

    _fails(needs_an_argument, "interface", "building it as factory(backbone=<Backbone>, seed=0) raised TypeError")

    class FitReturnsNothing(PixelCentroid):
        def fit(self, support, num_classes, validation=None):
            return None

    _fails(FitReturnsNothing, "interface", "fit returned a NoneType without a predict method")


def test_unknown_check_and_name():
    with pytest.raises(ValueError, match="unknown conformance checks \\['speed'\\]"):
        check_learner(PixelCentroid, checks=["speed"])
    with pytest.raises(ConfigError, match="unknown learner 'linear_prob'. Did you mean 'linear_probe'"):
        check_learner("linear_prob")


# ---- the kit's tiny data ----

def test_tiny_tasks_are_pure_functions_with_opaque_ids():
    a, b = tiny_task(5, seed=3), tiny_task(5, seed=3)
    np.testing.assert_array_equal(a.support.images, b.support.images)
    assert a.support.ids == b.support.ids and a.query.ids == b.query.ids
    others = [tiny_task(5, seed=4), tiny_task(5, seed=3, validation=True), tiny_task(5, seed=3, variant=1)]
    assert not set(a.support.ids) & set(a.query.ids)
    assert all(not set(a.support.ids + a.query.ids) & set(o.support.ids + o.query.ids) for o in others)
    assert all(i.startswith("tiny-") and len(i) == 21 for i in a.query.ids)  # a hash: no label in the id
    assert np.bincount(a.support.labels).tolist() == [1, 2, 3, 1, 2]
    assert a.support.images.dtype == np.float32 and 0 <= a.support.images.min() and a.support.images.max() <= 1
    assert [len(batch) for batch in tiny_task(11).batches()] == [1, 16, 16]
    assert all(batch.labels is None for batch in a.batches())
    assert [(t.labels - w.labels) % 5 for t, w in zip(a.batches("true"), a.batches("wrong"))][0].tolist() == [4]


def test_validation_split_holds_every_class_in_train():
    task = tiny_task(4, validation=True)
    v = task.validation
    assert sorted(set(v.train.labels.tolist())) == [0, 1, 2, 3] and sorted(v.val.labels.tolist()) == [0, 1, 2, 3]
    assert sorted(v.train.ids + v.val.ids) == sorted(task.support.ids)


def test_tiny_backbone_outputs_and_fixed_weights():
    first, second = tiny_backbone(), tiny_backbone()
    out = first(tiny_task(2).support.images)
    assert {k: tuple(v.shape) for k, v in out.items()} == {"embedding": (3, 32), "block1": (3, 8, 8, 8),
                                                           "block2": (3, 4, 4, 16)}
    for w1, w2 in zip(first.model.get_weights(), second.model.get_weights()):
        np.testing.assert_array_equal(w1, w2)
