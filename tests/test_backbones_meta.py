"""Meta-learning backbones (Conv-4, ResNet-18): named features, checkpoints, training."""

from __future__ import annotations

import numpy as np
import pytest

from fewshot_bench.backbones.base import BACKBONES
from fewshot_bench.backbones.weights import retrained
from fewshot_bench.errors import ConfigError, DataError


@pytest.mark.parametrize("size, sides, flat", [(84, (42, 21, 10, 5), 1600), (126, (63, 31, 15, 7), 3136)])
def test_conv4_features(size, sides, flat):
    backbone = BACKBONES.create(f"conv4(image_size={size})")
    assert backbone.feature_names == ("block1", "block2", "block3", "block4")
    assert backbone.value_range == (-1.0, 1.0)
    out = backbone(np.zeros((2, size, size, 3), np.float32))
    for name, side in zip(backbone.feature_names, sides):
        assert tuple(out[name].shape) == (2, side, side, 64), name
    assert tuple(out["embedding"].shape) == (2, flat)


@pytest.mark.parametrize("size, sides", [(84, (21, 11, 6, 3)), (126, (32, 16, 8, 4))])
def test_resnet18_features(size, sides):
    backbone = BACKBONES.create(f"resnet18(image_size={size})")
    assert backbone.feature_names == ("stem", "block1_unit01", "block1_unit02", "block2_unit01", "block2_unit02",
                                      "block3_unit01", "block3_unit02", "block4_unit01", "block4_unit02",
                                      "pre_logits")
    out = backbone(np.zeros((1, size, size, 3), np.float32))
    assert tuple(out["stem"].shape) == (1, sides[0], sides[0], 64)
    for block, (side, channels) in enumerate(zip(sides, (64, 128, 256, 512)), start=1):
        for unit in (1, 2):
            assert tuple(out[f"block{block}_unit{unit:02d}"].shape) == (1, side, side, channels)
    assert tuple(out["pre_logits"].shape) == tuple(out["embedding"].shape) == (1, 512)


def test_seeded_random_weights_and_checkpoint_round_trip(tmp_path):
    a, b = BACKBONES.create("resnet18(image_size=32)"), BACKBONES.create("resnet18(image_size=32)")
    c = BACKBONES.create("resnet18(image_size=32, seed=1)")
    assert a.weights_id == b.weights_id != c.weights_id
    path = tmp_path / "r18.weights.h5"
    c.model.save_weights(path)
    loaded = BACKBONES.create(f"resnet18(image_size=32, checkpoint='{path}')")
    images = np.random.default_rng(0).random((2, 32, 32, 3)).astype(np.float32)
    np.testing.assert_array_equal(np.asarray(loaded(images)["embedding"]), np.asarray(c(images)["embedding"]))
    assert not loaded.weights_id.startswith("random")
    with pytest.raises(DataError, match=r"r18.weights.h5: the weights do not fit conv4: layer 'block1_conv': "
                                        r"the file has weight shapes \[\(7, 7, 3, 64\)\].*\(3, 3, 3, 64\)"):
        BACKBONES.create(f"conv4(checkpoint='{path}')")
    with pytest.raises(DataError, match=rf"conv4 checkpoint {tmp_path}/none.weights.h5 not found.*save_weights"):
        BACKBONES.create(f"conv4(checkpoint='{tmp_path}/none.weights.h5')")


def test_trainable_from_scratch():
    import keras
    import tensorflow as tf

    backbone = BACKBONES.create("conv4(image_size=16)")
    model = backbone.model
    head = keras.layers.Dense(3)
    images = np.random.default_rng(0).random((8, 16, 16, 3)).astype(np.float32) * 2 - 1
    labels = np.arange(8) % 3
    before = model.get_layer("block1_conv").kernel.numpy().copy()
    moving = model.get_layer("block1_bn").moving_mean.numpy().copy()
    with tf.GradientTape() as tape:
        logits = head(model(images, training=True)["embedding"])
        loss = keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True)
    variables = model.trainable_variables + head.trainable_variables
    keras.optimizers.SGD(0.1).apply_gradients(zip(tape.gradient(loss, variables), variables))
    assert not np.allclose(model.get_layer("block1_conv").kernel.numpy(), before)
    assert not np.allclose(model.get_layer("block1_bn").moving_mean.numpy(), moving)
    assert retrained(backbone).weights_id != backbone.weights_id


def test_bad_sizes_and_arch():
    with pytest.raises(ConfigError, match="image_size=8"):
        BACKBONES.create("conv4(image_size=8)")
    with pytest.raises(ConfigError, match="unknown arch 'conv6'"):
        from fewshot_bench.backbones.meta_nets import build_meta_backbone

        build_meta_backbone(arch="conv6")
