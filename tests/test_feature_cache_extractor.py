"""FeatureExtractor over the persistent cache: reuse, invalidation, corruption, precision, determinism."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from fewshot_bench.backbones import feature_cache as fc
from fewshot_bench.backbones import features
from fewshot_bench.backbones.feature_cache import describe
from fewshot_bench.backbones.features import FeatureExtractor
from fewshot_bench.errors import ConfigError
from fewshot_bench.tasks import Examples


@pytest.fixture(scope="module")
def conv_backbone():
    """A small fully convolutional net with two named features (deterministic weights, any input size)."""
    import keras

    from fewshot_bench.backbones.base import Backbone

    inputs = keras.Input((None, None, 3))
    a = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="a",
                            kernel_initializer=keras.initializers.GlorotUniform(seed=1))(inputs)
    b = keras.layers.Conv2D(12, 3, strides=2, padding="same", activation="relu", name="b",
                            kernel_initializer=keras.initializers.GlorotUniform(seed=2))(a)
    embedding = keras.layers.GlobalAveragePooling2D()(b)
    model = keras.Model(inputs, {"embedding": embedding, "a": a, "b": b})
    return Backbone("tiny", model, 16, (-1.0, 1.0), ("a", "b"), "w1")


@pytest.fixture(scope="module")
def examples():
    images = np.random.default_rng(0).random((30, 16, 16, 3)).astype(np.float32)
    return Examples(images, np.arange(30) % 3, tuple(f"set/test/{i}" for i in range(30)))


def test_second_extractor_reads_the_disk_cache(conv_backbone, examples, tmp_path):
    first = FeatureExtractor(conv_backbone, layers=("embedding", "a"), batch_size=8, cache_dir=tmp_path)
    want = first.extract(examples)
    assert want.shape == (30, 12 + 8) and first.forward_images == 30
    first.flush()
    second = FeatureExtractor(conv_backbone, layers=("embedding", "a"), batch_size=8, cache_dir=tmp_path)
    got = second.extract(examples.take(np.arange(29, -1, -1)))
    assert second.forward_images == 0 and second.stats.hits == 30
    np.testing.assert_array_equal(got, want[::-1])
    # the features are what the network computes
    out = conv_backbone(examples.images[:2])
    np.testing.assert_allclose(want[:2, :12], np.asarray(out["embedding"]), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(want[:2, 12:], np.asarray(out["a"]).mean(axis=(1, 2)), rtol=1e-5, atol=1e-6)


def test_repeats_and_hits_inside_one_call(conv_backbone, examples, tmp_path):
    extractor = FeatureExtractor(conv_backbone, batch_size=4, cache_dir=tmp_path)
    extractor.extract(examples.take([0, 1, 2]))
    mixed = extractor.extract(examples.take([2, 5, 5, 0, 6]))
    assert extractor.forward_images == 5  # 0, 1, 2, then 5 and 6 once each
    np.testing.assert_array_equal(mixed[1], mixed[2])


@pytest.mark.parametrize("change", ["layers", "pooling", "image_size", "weights", "code_version", "value_range"])
def test_any_key_part_change_recomputes(conv_backbone, examples, tmp_path, monkeypatch, change):
    def extractor(backbone=conv_backbone, **kwargs):
        return FeatureExtractor(backbone, **{"batch_size": 16, "cache_dir": tmp_path, **kwargs})

    base = extractor()
    base.extract(examples)
    base.flush()
    same = extractor()
    same.extract(examples)
    assert same.forward_images == 0
    data = examples
    if change == "layers":
        other = extractor(layers=("embedding", "b"))
    elif change == "pooling":
        other = extractor(pooling="max")
    elif change == "image_size":
        other = extractor(dataclasses.replace(conv_backbone, image_size=24))
        data = Examples(np.resize(examples.images, (30, 24, 24, 3)), examples.labels, examples.ids)
    elif change == "weights":
        other = extractor(dataclasses.replace(conv_backbone, weights_id="w2"))
    elif change == "value_range":
        other = extractor(dataclasses.replace(conv_backbone, value_range=(0.0, 1.0)))
    else:
        monkeypatch.setattr(fc, "CODE_VERSION", fc.CODE_VERSION + 1)
        other = extractor()
    other.extract(data)
    assert other.forward_images == 30
    assert len(describe(tmp_path)) == 2


def test_corrupt_entry_is_recomputed(conv_backbone, examples, tmp_path):
    first = FeatureExtractor(conv_backbone, cache_dir=tmp_path)
    want = first.extract(examples)
    first.flush()
    (shard,) = tmp_path.glob("*/*.npy")
    data = bytearray(shard.read_bytes())
    data[-3] ^= 0xFF  # inside the last row
    shard.write_bytes(bytes(data))
    second = FeatureExtractor(conv_backbone, cache_dir=tmp_path)
    got = second.extract(examples)
    assert second.forward_images == 1 and second.stats.corrupt == 1
    np.testing.assert_array_equal(got[:-1], want[:-1])  # served from the cache
    np.testing.assert_allclose(got[-1], want[-1], rtol=1e-5, atol=1e-7)  # recomputed (alone in its batch)


def test_default_cache_dir_is_process_wide_and_none_means_memory(conv_backbone, examples, tmp_path):
    assert FeatureExtractor(conv_backbone).cache_dir is None
    features.set_default_cache_dir(tmp_path)
    try:
        assert FeatureExtractor(conv_backbone).cache_dir == tmp_path
        memory = FeatureExtractor(conv_backbone, cache_dir=None)
        memory.extract(examples)
        memory.flush()
        assert memory.cache_dir is None and describe(tmp_path) == [] and not list(tmp_path.rglob("*.npy"))
    finally:
        features.set_default_cache_dir(None)


def test_extraction_is_repeatable_and_batching_changes_only_rounding(conv_backbone, examples):
    def run(batch_size, order):
        extractor = FeatureExtractor(conv_backbone, layers=("b", "embedding"), batch_size=batch_size, cache_dir=None)
        return extractor.extract(examples.take(order))

    order = np.random.default_rng(3).permutation(30)
    np.testing.assert_array_equal(run(8, order), run(8, order))
    want = run(8, np.arange(30))
    for batch_size, indices in [(1, order), (64, np.array([29])), (3, np.arange(5, 17))]:
        np.testing.assert_allclose(run(batch_size, indices), want[indices], rtol=1e-5, atol=1e-7)


def test_extract_stream_batch_by_batch(conv_backbone, examples):
    extractor = FeatureExtractor(conv_backbone, cache_dir=None)
    batches = [examples.take(np.arange(s, min(s + 8, 30))) for s in range(0, 30, 8)]
    parts = list(extractor.extract_stream(iter(batches)))
    assert [len(p) for p in parts] == [8, 8, 8, 6]
    np.testing.assert_array_equal(np.concatenate(parts), FeatureExtractor(conv_backbone).extract(examples))


def test_mixed_precision_is_close_and_keyed_apart(conv_backbone, examples, tmp_path):
    full = FeatureExtractor(conv_backbone, cache_dir=tmp_path, mixed_precision=False)
    half = FeatureExtractor(conv_backbone, cache_dir=tmp_path, mixed_precision=True)
    assert (full.precision, half.precision) == ("float32", "mixed_float16")
    a, b = full.extract(examples), half.extract(examples)
    assert b.dtype == np.float32 and half.forward_images == 30  # not served from float32 entries
    np.testing.assert_allclose(b, a, rtol=2e-2, atol=2e-3)
    assert not np.array_equal(a, b)
    assert {info.parts["precision"] for info in describe(tmp_path)} == {"float32", "mixed_float16"}


def test_unknown_layer_is_a_config_error(conv_backbone):
    with pytest.raises(ConfigError, match=r"no output 'block9'.*embedding"):
        FeatureExtractor(conv_backbone, layers=("block9",))


class CountingLoader:
    """Loads rows of known images for a lazy Examples, recording which were asked for."""

    def __init__(self, images):
        self.images, self.asked = images, []

    def __call__(self, indices):
        self.asked.extend(int(i) for i in indices)
        return self.images[indices]


def lazy(examples, loader):
    return Examples.lazy(examples.ids, examples.labels, examples.image_shape, loader)


def test_lazy_examples_decode_only_the_images_the_cache_misses(conv_backbone, examples, tmp_path):
    eager = FeatureExtractor(conv_backbone, batch_size=8, cache_dir=None).extract(examples)
    loader = CountingLoader(examples.images)
    first = FeatureExtractor(conv_backbone, batch_size=8, cache_dir=tmp_path)
    head = examples.take(np.arange(16))
    np.testing.assert_array_equal(first.extract(lazy(head, loader)), eager[:16])  # same images, same batches
    assert sorted(loader.asked) == list(range(16))
    loader.asked.clear()
    # 16 of 30 cached: only the other 14 are decoded, and features match the eager path
    got = first.extract(lazy(examples, loader))
    assert sorted(loader.asked) == list(range(16, 30)) and first.forward_images == 30
    np.testing.assert_allclose(got, eager, rtol=1e-5, atol=1e-7)
    first.flush()
    loader.asked.clear()
    second = FeatureExtractor(conv_backbone, batch_size=8, cache_dir=tmp_path)
    again = lazy(examples, loader)
    np.testing.assert_array_equal(second.extract(again), got)
    assert loader.asked == [] and not again.decoded and second.forward_images == 0
