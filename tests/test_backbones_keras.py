"""Keras Applications backbones with weights from local files the tests write (no downloads)."""

from __future__ import annotations

import numpy as np
import pytest

from fewshot_bench.backbones.base import BACKBONES
from fewshot_bench.errors import DataError

SIZE = 32
UNIT_CHANNELS = {1: 256, 2: 512, 3: 1024, 4: 2048}


@pytest.fixture(scope="module")
def resnet50_file(tmp_path_factory):
    import keras

    path = tmp_path_factory.mktemp("keras") / "resnet50_notop.weights.h5"
    model = keras.applications.ResNet50(include_top=False, weights=None, input_shape=(SIZE, SIZE, 3))
    model.save_weights(path)
    return path, model


def test_resnet50_from_file_features_and_caffe_input(resnet50_file):
    path, source = resnet50_file
    backbone = BACKBONES.create(f"keras_resnet50(image_size={SIZE}, weights='{path}')")
    assert backbone.value_range == (0.0, 255.0)
    np.testing.assert_array_equal(backbone.model.get_layer("conv3_block2_2_conv").kernel.numpy(),
                                  source.get_layer("conv3_block2_2_conv").kernel.numpy())
    images = np.random.default_rng(0).random((2, SIZE, SIZE, 3)).astype(np.float32)
    out = backbone(images)
    assert len(backbone.feature_names) == 18  # stem, 16 units, pre_logits
    assert tuple(out["stem"].shape) == (2, 8, 8, 64)
    for name in backbone.feature_names[1:-1]:
        block = int(name[5])
        side = SIZE // 2 ** (block + 1)
        assert tuple(out[name].shape) == (2, side, side, UNIT_CHANNELS[block]), name
    assert tuple(out["embedding"].shape) == (2, 2048)
    # Same as Keras' own "caffe" preprocessing followed by the plain application.
    import keras

    want = source(keras.applications.resnet50.preprocess_input(images * 255.0))
    np.testing.assert_allclose(np.asarray(out["block4_unit03"]), np.asarray(want), rtol=1e-4, atol=1e-3)


def test_weights_that_do_not_fit_name_the_layer_and_both_shapes(tmp_path):
    import keras

    path = tmp_path / "ten_classes.weights.h5"
    keras.applications.ResNet50(include_top=True, weights=None, classes=10, input_shape=(SIZE, SIZE, 3),
                                classifier_activation=None).save_weights(path)
    with pytest.raises(DataError, match=r"ten_classes.weights.h5: the weights do not fit Keras ResNet50: layer "
                                        r"'predictions'.*\[\(2048, 10\), \(10,\)\].*\[\(2048, 1000\), \(1000,\)\]"):
        BACKBONES.create(f"keras_resnet50(image_size={SIZE}, weights='{path}', include_top=True)")


def test_another_applications_file_names_the_first_differing_layer(resnet50_file):
    with pytest.raises(DataError, match=r"do not fit Keras ResNet50V2: layer 'conv2_block1_1_conv': the file has "
                                        r"weight shapes \[\(1, 1, 64, 64\), \(64,\)\], the model expects "
                                        r"\[\(1, 1, 64, 64\)\]"):
        BACKBONES.create(f"keras_resnet50v2(image_size={SIZE}, weights='{resnet50_file[0]}')")


def test_missing_file_names_path_and_how_to_get_it(tmp_path):
    with pytest.raises(DataError, match=rf"{tmp_path}/nope.h5 not found.*weights='imagenet'.*~/.keras/models"):
        BACKBONES.create(f"keras_efficientnet_b0(image_size={SIZE}, weights='{tmp_path}/nope.h5')")


def test_resnet50v2_named_features():
    backbone = BACKBONES.create(f"keras_resnet50v2(image_size={SIZE}, weights=None)")
    assert backbone.value_range == (-1.0, 1.0) and backbone.id.startswith("keras_resnet50v2@random-")
    out = backbone(np.zeros((1, SIZE, SIZE, 3), np.float32))
    # ResNet50V2 strides in the last unit of stages 1-3.
    assert tuple(out["block1_unit02"].shape) == (1, 8, 8, 256)
    assert tuple(out["block1_unit03"].shape) == (1, 4, 4, 256)
    assert tuple(out["block4_unit03"].shape) == (1, 1, 1, 2048)
    assert tuple(out["pre_logits"].shape) == (1, 2048)


def test_efficientnet_blocks_and_imagenet_rescaling_for_files(tmp_path):
    import keras

    source = keras.applications.EfficientNetB0(include_top=False, weights=None, input_shape=(SIZE, SIZE, 3))
    norm = next(layer for layer in source.layers if type(layer).__name__ == "Normalization")
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    norm.adapt_mean.assign(mean.reshape(norm.adapt_mean.shape))
    norm.adapt_variance.assign((std ** 2).reshape(norm.adapt_variance.shape))
    path = tmp_path / "b0.weights.h5"
    source.save_weights(path)
    backbone = BACKBONES.create(f"keras_efficientnet_b0(image_size={SIZE}, weights='{path}')")
    expected = ("stem", "block1a", "block2a", "block2b", "block3a", "block3b", "block4a", "block4b", "block4c",
                "block5a", "block5b", "block5c", "block6a", "block6b", "block6c", "block6d", "block7a", "head")
    assert backbone.feature_names == expected and backbone.value_range == (0.0, 255.0)
    x = np.random.default_rng(1).random((1, SIZE, SIZE, 3)).astype(np.float32) * 255.0
    out = backbone(x / 255.0)
    assert tuple(out["block3b"].shape) == (1, 4, 4, 40) and tuple(out["head"].shape) == (1, 1, 1, 1280)
    assert tuple(out["embedding"].shape) == (1, 1280)
    loaded_norm = next(layer for layer in backbone.model.layers if type(layer).__name__ == "Normalization")
    probe = keras.Model(backbone.model.inputs, loaded_norm.output)
    # keras.applications.EfficientNet with weights="imagenet": (x / 255 - mean) / std / sqrt(std)
    want = (x / 255.0 - mean) / std / np.sqrt(std)
    np.testing.assert_allclose(np.asarray(probe(x)), want, rtol=1e-4, atol=1e-4)
    # The float16 copy used for extraction on GPUs keeps the normalisation.
    from fewshot_bench.backbones.features import mixed_precision_copy

    half = mixed_precision_copy(backbone.model)
    half_norm = next(layer for layer in half.layers if type(layer).__name__ == "Normalization")
    half_probe = keras.Model(half.inputs, half_norm.output)
    np.testing.assert_allclose(np.asarray(half_probe(x), np.float32), want, rtol=1e-2, atol=1e-2)
