"""SavedModel backbones: a tiny Keras model exported by the test and loaded back by path."""

from __future__ import annotations

import numpy as np
import pytest

from fewshot_bench.backbones.base import BACKBONES
from fewshot_bench.errors import ConfigError, DataError

SIZE = 16


def tiny_model(two_flat_outputs: bool = False):
    import keras

    inputs = keras.Input((SIZE, SIZE, 3), name="pixels")
    feat = keras.layers.Conv2D(4, 3, name="c1", kernel_initializer=keras.initializers.GlorotUniform(seed=0))(inputs)
    outputs = {"feat": feat, "pooled": keras.layers.GlobalAveragePooling2D()(feat)}
    if two_flat_outputs:
        outputs["maxed"] = keras.layers.GlobalMaxPooling2D()(feat)
    return keras.Model(inputs, outputs)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    path = tmp_path_factory.mktemp("sm") / "tiny_export"
    model = tiny_model()
    model.export(str(path), verbose=False)
    return path, model


def test_exported_model_maps_outputs_to_embedding_and_features(exported):
    path, model = exported
    backbone = BACKBONES.create(f"saved_model(path='{path}', value_range=(-1.0, 1.0))")
    assert backbone.name == "saved_model_tiny_export" and backbone.image_size == SIZE  # from the signature
    assert backbone.feature_names == ("feat",) and backbone.value_range == (-1.0, 1.0)
    images = np.random.default_rng(0).random((3, SIZE, SIZE, 3)).astype(np.float32)
    out = backbone(images)
    want = model(images * 2.0 - 1.0)
    assert tuple(out["feat"].shape) == (3, SIZE - 2, SIZE - 2, 4) and tuple(out["embedding"].shape) == (3, 4)
    np.testing.assert_allclose(np.asarray(out["embedding"]), np.asarray(want["pooled"]), rtol=1e-5, atol=1e-6)


def test_feature_extractor_runs_on_a_saved_model(exported):
    from fewshot_bench.backbones.features import FeatureExtractor
    from fewshot_bench.tasks import Examples

    backbone = BACKBONES.create(f"saved_model(path='{exported[0]}')")
    images = np.random.default_rng(1).random((5, SIZE, SIZE, 3)).astype(np.float32)
    extractor = FeatureExtractor(backbone, layers=("embedding", "feat"), cache_dir=None, mixed_precision=True)
    assert extractor.precision == "float32"  # not a Keras model: no float16 copy
    got = extractor.extract(Examples(images, None, tuple(f"s{i}" for i in range(5))))
    want = exported[1](images)
    np.testing.assert_allclose(got, np.concatenate([np.asarray(want["pooled"]),
                                                    np.asarray(want["feat"]).mean(axis=(1, 2))], axis=1),
                               rtol=1e-5, atol=1e-6)


def test_tf_saved_model_save_single_output_and_call_without_signature(tmp_path):
    import keras
    import tensorflow as tf

    inputs = keras.Input((SIZE, SIZE, 3))
    model = keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(6, 3)(inputs)))
    tf.saved_model.save(model, str(tmp_path / "single"))
    backbone = BACKBONES.create(f"saved_model(path='{tmp_path / 'single'}')")
    assert backbone.feature_names == ()
    images = np.random.default_rng(2).random((2, SIZE, SIZE, 3)).astype(np.float32)
    np.testing.assert_allclose(np.asarray(backbone(images)["embedding"]), np.asarray(model(images)), rtol=1e-5,
                               atol=1e-6)

    module = tf.Module()
    module.net = model
    module.__call__ = tf.function(lambda x: {"vec": model(x)},
                                  input_signature=[tf.TensorSpec([None, SIZE, SIZE, 3], tf.float32)])
    tf.saved_model.save(module, str(tmp_path / "hub_style"), signatures={})
    hub = BACKBONES.create(f"saved_model(path='{tmp_path / 'hub_style'}', signature=None, image_size={SIZE})")
    np.testing.assert_allclose(np.asarray(hub(images)["embedding"]), np.asarray(model(images)), rtol=1e-5,
                               atol=1e-6)


def test_ambiguous_outputs_need_a_name(tmp_path):
    path = tmp_path / "two"
    tiny_model(two_flat_outputs=True).export(str(path), verbose=False)
    with pytest.raises(ConfigError, match=r"cannot tell which output is the embedding; pass embedding=NAME.*maxed"):
        BACKBONES.create(f"saved_model(path='{path}')")
    backbone = BACKBONES.create(f"saved_model(path='{path}', embedding='maxed')")
    assert backbone.feature_names == ("feat", "pooled")
    with pytest.raises(ConfigError, match=r"no output 'nope'"):
        BACKBONES.create(f"saved_model(path='{path}', embedding='nope')")


def test_errors_name_the_path_and_the_fix(tmp_path, exported):
    with pytest.raises(DataError, match=rf"SavedModel {tmp_path}/absent not found.*export"):
        BACKBONES.create(f"saved_model(path='{tmp_path}/absent')")
    with pytest.raises(ConfigError, match=rf"takes {SIZE}x{SIZE} images, not image_size=32"):
        BACKBONES.create(f"saved_model(path='{exported[0]}', image_size=32)")
    with pytest.raises(ConfigError, match=r"no signature 'classify'.*serving_default"):
        BACKBONES.create(f"saved_model(path='{exported[0]}', signature='classify')")
