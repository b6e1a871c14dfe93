"""ProtoNet: prototypes and distances on hand-computed cases, accuracy on digits, bad input, meta-training."""

import numpy as np
import pytest

from fewshot_bench.errors import LearnerError
from fewshot_bench.learners import LEARNERS
from fewshot_bench.learners.protonet import ProtoNet, prototype_logits, prototypes, tf_prototype_logits, tf_prototypes
from fewshot_bench.tasks import Examples, QueryStream, Task


def test_prototypes_are_class_means_and_logits_negative_squared_distances():
    embeddings = np.array([[0.0, 0.0], [2.0, 0.0], [0.0, 4.0]])
    protos = prototypes(embeddings, np.array([0, 0, 1]), 2)
    np.testing.assert_allclose(protos, [[1.0, 0.0], [0.0, 4.0]])
    # query (1, 1): distances 0^2 + 1^2 = 1 and 1^2 + 3^2 = 10
    np.testing.assert_allclose(prototype_logits(np.array([[1.0, 1.0], [0.0, 4.0]]), protos), [[-1, -10], [-17, 0]])


def test_tensorflow_versions_agree():
    import tensorflow as tf

    rng = np.random.default_rng(0)
    x, labels, q = rng.normal(size=(9, 4)), np.array([0, 1, 2] * 3), rng.normal(size=(5, 4))
    protos = prototypes(x, labels, 3)
    np.testing.assert_allclose(tf_prototypes(tf.constant(x), labels, 3).numpy(), protos, rtol=1e-6)
    np.testing.assert_allclose(tf_prototype_logits(tf.constant(q), tf.constant(protos)).numpy(),
                               prototype_logits(q, protos), rtol=1e-6, atol=1e-9)


def test_a_class_without_examples_is_refused():
    with pytest.raises(LearnerError, match=r"classes \[1\] of 3"):
        prototypes(np.zeros((2, 2)), np.array([0, 2]), 3)


def _examples(digits, idx, prefix="p"):
    images, labels = digits
    return Examples(images[idx], labels[idx], tuple(f"{prefix}{i}" for i in idx))


@pytest.mark.filterwarnings("ignore:self.within_class_std_dev_:UserWarning")  # constant pixels of digits
def test_protonet_far_above_chance_on_digits(digits, flat_backbone):
    learner = LEARNERS.create("protonet", backbone=flat_backbone, seed=0)
    predictor = learner.fit(_examples(digits, np.arange(100)), 10)  # about 10 shots per class
    query = _examples(digits, np.arange(1000, 1797))
    logits = predictor.predict(query.unlabelled())
    assert logits.shape == (797, 10)
    assert (logits.argmax(1) == query.labels).mean() > 0.7  # chance 0.1
    # the same decisions as scikit-learn's nearest centroid (Euclidean) on the same embedding
    from sklearn.neighbors import NearestCentroid

    flat = lambda e: e.images.reshape(len(e), -1)  # noqa: E731 -- the flat backbone's embedding
    support = _examples(digits, np.arange(100))
    reference = NearestCentroid().fit(flat(support), support.labels).predict(flat(query))
    np.testing.assert_array_equal(logits.argmax(1), reference)
    assert learner.last_fit_seconds > 0


def test_nan_embeddings_stop_the_task(digits):
    import keras

    from fewshot_bench.backbones.base import Backbone

    inputs = keras.Input((8, 8, 3))
    broken = keras.layers.Lambda(lambda t: keras.ops.log(t - 2.0))(keras.layers.Flatten()(inputs))  # log < 0: NaN
    backbone = Backbone("broken", keras.Model(inputs, {"embedding": broken}), 8, (0.0, 1.0), (), "nan")
    with pytest.raises(LearnerError, match="NaN"):
        ProtoNet(backbone).fit(_examples(digits, np.arange(20), prefix="nan"), 10)


def toy_episode(digits, start, ways=3, shots=2, queries=3) -> Task:
    """A training episode of digit classes 0..ways-1 (images upsampled to 16 px for Conv-4)."""
    images, labels = digits
    support, query = [], []
    for c in range(ways):
        members = np.flatnonzero(labels == c)[start:start + shots + queries]
        support += list(members[:shots])
        query += list(members[shots:])

    def take(idx):
        big = np.repeat(np.repeat(images[idx], 2, axis=1), 2, axis=2)
        return Examples(big, labels[idx], tuple(f"ep{i}" for i in idx))

    return Task(take(support), QueryStream.from_examples(take(query)), ways, "toy", "train", "digits",
                str(start), 0)


def test_meta_train_step_lowers_the_episode_loss(digits):
    import keras

    from fewshot_bench.backbones.meta_nets import conv4

    learner = ProtoNet(conv4(image_size=16, seed=0))
    optimizer = keras.optimizers.SGD(0.05)
    task = toy_episode(digits, 0)
    losses = [learner.meta_train_step(task, optimizer)["loss"] for _ in range(6)]
    assert losses[-1] < losses[0]


def test_meta_train_never_meets_features_cached_before_training(digits, tmp_path):
    from fewshot_bench.backbones.features import FeatureExtractor
    from fewshot_bench.backbones.meta_nets import conv4

    learner = ProtoNet(conv4(image_size=16, seed=0))
    episode = toy_episode(digits, 0)
    cache = tmp_path / "cache"
    before = FeatureExtractor(learner.backbone, cache_dir=cache).extract(episode.support)
    old_id = learner.backbone.id
    learner.meta_train([toy_episode(digits, s) for s in (0, 5)], learning_rate=0.01)
    assert learner.backbone.id != old_id
    after = FeatureExtractor(learner.backbone, cache_dir=cache).extract(episode.support)
    fresh = FeatureExtractor(learner.backbone, cache_dir=None).extract(episode.support)
    np.testing.assert_allclose(after, fresh, rtol=1e-5, atol=1e-6)
    assert not np.allclose(after, before)
