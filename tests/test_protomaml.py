"""fo-Proto-MAML: the prototype head, the inner loop, independence of tasks, bad input, the first-order step."""

import numpy as np
import pytest

from fewshot_bench.errors import ConfigError, LearnerError
from fewshot_bench.learners.protomaml import ProtoMAML, diverged, prototype_head
from fewshot_bench.learners.protonet import ProtoNet
from fewshot_bench.tasks import Examples

from test_protonet import toy_episode  # noqa: E402  (pytest puts tests/ on sys.path)


def test_prototype_head_by_hand():
    weights, bias = prototype_head(np.array([[1.0, 0.0], [0.0, 4.0]]))
    np.testing.assert_allclose(weights, [[2.0, 0.0], [0.0, 8.0]])
    np.testing.assert_allclose(bias, [-1.0, -16.0])
    # x = (1, 1): x.W + b = (2 - 1, 8 - 16) = (1, -8) = -(1, 10) + ||x||^2
    np.testing.assert_allclose(np.array([1.0, 1.0]) @ weights + bias, [1.0, -8.0])


@pytest.fixture(scope="module")
def bn_backbone():
    """Conv-4 (batch norm inside) at 16 px with fixed random weights."""
    from fewshot_bench.backbones.meta_nets import conv4

    return conv4(image_size=16, seed=3)


def _examples(digits, idx, prefix="m"):
    images, labels = digits
    big = np.repeat(np.repeat(images[idx], 2, axis=1), 2, axis=2)  # 16 px
    return Examples(big, labels[idx], tuple(f"{prefix}{i}" for i in idx))


def test_head_initialisation_reproduces_protonet_before_any_step(digits, bn_backbone):
    support, query = _examples(digits, np.arange(40)), _examples(digits, np.arange(500, 600))
    maml = ProtoMAML(bn_backbone, num_steps=0).fit(support, 10).predict(query.unlabelled())
    proto = ProtoNet(bn_backbone).fit(support, 10).predict(query.unlabelled())
    np.testing.assert_array_equal(maml.argmax(1), proto.argmax(1))
    assert (proto.argmax(1) == query.labels).mean() > 0.3  # informative embeddings (chance 0.1), not a trivial tie
    difference = maml - proto  # = ||x||^2, the same for every class
    np.testing.assert_allclose(difference, np.repeat(difference[:, :1], 10, axis=1), rtol=1e-4, atol=1e-3)


def test_inner_loop_adapts_then_restores_the_backbone(digits, bn_backbone):
    support, query = _examples(digits, np.arange(40)), _examples(digits, np.arange(500, 600))
    before = [w.copy() for w in bn_backbone.model.get_weights()]
    learner = ProtoMAML(bn_backbone, num_steps=5, learning_rate=0.001)
    predictor = learner.fit(support, 10)
    assert len(learner.support_losses) == 6 and learner.support_losses[-1] < learner.support_losses[0]
    adapted = predictor.predict(query.unlabelled())
    unchanged = lambda: all(np.array_equal(a, b) for a, b in zip(before, bn_backbone.model.get_weights()))  # noqa
    assert unchanged()
    assert not np.allclose(adapted, ProtoMAML(bn_backbone, num_steps=0).fit(support, 10).predict(query))
    assert unchanged()
    again = ProtoMAML(bn_backbone, num_steps=5, learning_rate=0.001)
    again.fit(_examples(digits, np.arange(100, 130), prefix="other"), 10)  # another task first
    np.testing.assert_allclose(again.fit(support, 10).predict(query.unlabelled()), adapted, rtol=1e-5, atol=1e-5)
    assert learner.last_fit_seconds > 0


def test_head_only_adaptation_and_transductive_batch_norm(digits, bn_backbone):
    support, query = _examples(digits, np.arange(40)), _examples(digits, np.arange(500, 700))
    head_only = ProtoMAML(bn_backbone, num_steps=10, learning_rate=0.001, adapt_backbone=False).fit(support, 10)
    assert head_only.weights is None  # the backbone is not copied when it does not adapt
    assert (head_only.predict(query).argmax(1) == query.labels).mean() > 0.5
    batch = ProtoMAML(bn_backbone, num_steps=3, learning_rate=0.001, batch_norm="batch").fit(support, 10)
    assert (batch.predict(query).argmax(1) == query.labels).mean() > 0.5
    with pytest.raises(ConfigError, match="batch_norm"):
        ProtoMAML(bn_backbone, batch_norm="frozen")


def test_divergence_rule():
    assert not diverged(5.0, 2.0, 2.0) and diverged(5.01, 2.0, 2.0)  # limit 2 * 2 + 1
    assert not diverged(0.9, 1e-6, 2.0)  # a nearly perfect start may rise a little
    assert diverged(float("nan"), 1.0, 2.0) and diverged(float("inf"), 1.0, 2.0)


def test_divergence_and_missing_classes_stop_the_task(digits, bn_backbone):
    support = _examples(digits, np.arange(40))
    before = [w.copy() for w in bn_backbone.model.get_weights()]
    with pytest.raises(LearnerError, match="diverged"):
        ProtoMAML(bn_backbone, num_steps=20, learning_rate=1e8).fit(support, 10)
    with pytest.raises(LearnerError, match=r"diverged \(after step 1 of 3"):  # finite but rising loss
        ProtoMAML(bn_backbone, num_steps=3, learning_rate=1.0).fit(support, 10)
    assert all(np.array_equal(a, b) for a, b in zip(before, bn_backbone.model.get_weights()))
    with pytest.raises(LearnerError, match="no support example"):
        ProtoMAML(bn_backbone).fit(support.take(np.flatnonzero(support.labels != 4)), 10)


def test_first_order_step_without_inner_steps_is_the_protonet_step(digits):
    """With 0 inner steps the meta-gradient (direct + through the prototype head) is ProtoNet's gradient."""
    import keras

    from fewshot_bench.backbones.meta_nets import conv4

    task = toy_episode(digits, 0)
    proto_backbone, maml_backbone = conv4(image_size=16, seed=1), conv4(image_size=16, seed=1)
    ProtoNet(proto_backbone).meta_train_step(task, keras.optimizers.SGD(10.0))
    ProtoMAML(maml_backbone, train_num_steps=0).meta_train_step(task, keras.optimizers.SGD(10.0))
    trainable = lambda backbone: [v.numpy() for v in backbone.model.trainable_variables]  # noqa: E731
    start = trainable(conv4(image_size=16, seed=1))  # (moving statistics differ: more forward passes)
    largest = max(np.abs(p - s).max() for p, s in zip(trainable(proto_backbone), start))
    assert largest > 1e-4
    for p, m, s in zip(trainable(proto_backbone), trainable(maml_backbone), start):
        np.testing.assert_allclose(m - s, p - s, rtol=0, atol=1e-3 * largest)


def test_meta_train_step_with_inner_steps_learns(digits):
    import keras

    from fewshot_bench.backbones.meta_nets import conv4

    learner = ProtoMAML(conv4(image_size=16, seed=2), train_num_steps=2, learning_rate=0.001)
    optimizer = keras.optimizers.Adam(1e-2)
    task = toy_episode(digits, 0)
    losses = [learner.meta_train_step(task, optimizer)["loss"] for _ in range(6)]
    assert losses[-1] < losses[0]


def test_chunked_inner_steps_take_the_same_step(digits, bn_backbone):
    support, query = _examples(digits, np.arange(30)), _examples(digits, np.arange(500, 560))
    whole = ProtoMAML(bn_backbone, num_steps=3, learning_rate=0.001)
    chunked = ProtoMAML(bn_backbone, num_steps=3, learning_rate=0.001, inner_batch_size=7)  # 7+7+7+7+2
    expected = whole.fit(support, 10).predict(query.unlabelled())
    np.testing.assert_allclose(chunked.fit(support, 10).predict(query.unlabelled()), expected, rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(chunked.support_losses, whole.support_losses, rtol=1e-4)


def test_meta_training_tolerates_a_rising_inner_loss_but_restores_on_failure(digits):
    import keras

    from fewshot_bench.backbones.meta_nets import conv4

    task = toy_episode(digits, 0, ways=10, shots=4, queries=3)
    learner = ProtoMAML(conv4(image_size=16, seed=2), train_num_steps=3, learning_rate=1.0)
    learner.meta_train_step(task, keras.optimizers.SGD(1e-3))  # evaluation would call this divergence
    assert learner.support_losses[-1] > 2 * learner.support_losses[0] + 1
    before = [v.numpy() for v in learner.trainable_variables()]
    exploding = ProtoMAML(learner.backbone, train_num_steps=3, learning_rate=1e30)
    with pytest.raises(LearnerError, match="diverged"):
        exploding.meta_train_step(task, keras.optimizers.SGD(1e-3))
    for a, b in zip(before, learner.trainable_variables()):
        np.testing.assert_array_equal(a, b.numpy())
