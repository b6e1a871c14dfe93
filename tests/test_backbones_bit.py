"""BiT ResNet-v2: the ``.npz`` mapping on a synthetic file with the real key names, shapes, errors.

The synthetic file holds R50x1's root, block1/unit01 and block2/unit01 (real
names and shapes) and a 10-class head. The Keras model loading it is checked
against an independent numpy forward pass written from the paper's recipe
(weight-standardised convolutions, group norm, pre-activation units).
"""

from __future__ import annotations

import numpy as np
import pytest

from fewshot_bench.backbones.base import BACKBONES
from fewshot_bench.backbones.bit import BIT_MODELS, build_bit, feature_names
from fewshot_bench.errors import DataError

SIZE = 32


def synthetic_npz(path, units=(1, 1), classes=10, seed=0, rename_conv=False):
    """A BiT checkpoint with the official key names (width 1) and random values."""
    rng = np.random.default_rng(seed)
    w = {}

    def put(key, shape, scale=0.1, offset=0.0):
        w[key] = (offset + scale * rng.standard_normal(shape)).astype(np.float32)

    put("resnet/root_block/standardized_conv2d/kernel", (7, 7, 3, 64))
    cin = 64
    for b, n in enumerate(units, start=1):
        f = 64 * 2 ** (b - 1)
        for u in range(1, n + 1):
            p = f"resnet/block{b}/unit{u:02d}/"
            put(p + "a/group_norm/gamma", (cin,), offset=1.0)
            put(p + "a/group_norm/beta", (cin,))
            put(p + "a/standardized_conv2d/kernel", (1, 1, cin, f))
            if u == 1:
                put(p + "a/proj/standardized_conv2d/kernel", (1, 1, cin, 4 * f))
            put(p + "b/group_norm/gamma", (f,), offset=1.0)
            put(p + "b/group_norm/beta", (f,))
            put(p + "b/standardized_conv2d/kernel", (3, 3, f, f))
            put(p + "c/group_norm/gamma", (f,), offset=1.0)
            put(p + "c/group_norm/beta", (f,))
            put(p + "c/standardized_conv2d/kernel", (1, 1, f, 4 * f))
            cin = 4 * f
    put("resnet/group_norm/gamma", (cin,), offset=1.0)
    put("resnet/group_norm/beta", (cin,))
    put("resnet/head/conv2d/kernel", (1, 1, cin, classes))
    put("resnet/head/conv2d/bias", (classes,))
    if rename_conv:  # some released files carry numbered conv names
        key = "resnet/block1/unit01/b/standardized_conv2d/kernel"
        w[key.replace("standardized_conv2d/", "standardized_conv2d_3/")] = w.pop(key)
    np.savez(path, **w)
    return w


# ---- independent numpy reference (NHWC, HWIO, float64) ----

def standardize(kernel):
    mean = kernel.mean(axis=(0, 1, 2), keepdims=True)
    return (kernel - mean) / np.sqrt(((kernel - mean) ** 2).mean(axis=(0, 1, 2), keepdims=True) + 1e-10)


def conv(x, kernel, stride=1):
    """Zero-padded by (k - 1) // 2 on each side, then a valid convolution."""
    k = kernel.shape[0]
    p = (k - 1) // 2
    x = np.pad(x, ((0, 0), (p, p), (p, p), (0, 0)))
    out = (x.shape[1] - k) // stride + 1
    y = 0.0
    for i in range(k):
        for j in range(k):
            patch = x[:, i:i + stride * (out - 1) + 1:stride, j:j + stride * (out - 1) + 1:stride]
            y = y + patch @ standardize(kernel)[i, j]
    return y


def group_norm(x, gamma, beta, groups=32):
    n, h, w, c = x.shape
    g = x.reshape(n, h, w, groups, c // groups)
    mean = g.mean(axis=(1, 2, 4), keepdims=True)
    var = ((g - mean) ** 2).mean(axis=(1, 2, 4), keepdims=True)
    return ((g - mean) / np.sqrt(var + 1e-5)).reshape(x.shape) * gamma + beta


def reference(w, images01, units=(1, 1)):
    w = {k: v.astype(np.float64) for k, v in w.items()}
    x = images01.astype(np.float64) * 2.0 - 1.0
    out = {}
    x = conv(x, w["resnet/root_block/standardized_conv2d/kernel"], 2)
    x = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))  # zeros, as BiT pads before its max-pool
    side = (x.shape[1] - 3) // 2 + 1
    x = out["stem"] = np.max([x[:, i:i + 2 * side - 1:2, j:j + 2 * side - 1:2] for i in range(3) for j in range(3)],
                             axis=0)
    relu = lambda v: np.maximum(v, 0.0)  # noqa: E731
    for b, n in enumerate(units, start=1):
        for u in range(1, n + 1):
            p = f"resnet/block{b}/unit{u:02d}/"
            stride = 2 if b > 1 and u == 1 else 1
            pre = relu(group_norm(x, w[p + "a/group_norm/gamma"], w[p + "a/group_norm/beta"]))
            shortcut = conv(pre, w[p + "a/proj/standardized_conv2d/kernel"], stride) if u == 1 else x
            h = conv(pre, w[p + "a/standardized_conv2d/kernel"])
            h = conv(relu(group_norm(h, w[p + "b/group_norm/gamma"], w[p + "b/group_norm/beta"])),
                     w[p + "b/standardized_conv2d/kernel"], stride)
            h = conv(relu(group_norm(h, w[p + "c/group_norm/gamma"], w[p + "c/group_norm/beta"])),
                     w[p + "c/standardized_conv2d/kernel"])
            x = out[f"block{b}_unit{u:02d}"] = h + shortcut
    x = relu(group_norm(x, w["resnet/group_norm/gamma"], w["resnet/group_norm/beta"]))
    out["embedding"] = out["pre_logits"] = x.mean(axis=(1, 2))
    out["logits"] = out["embedding"] @ w["resnet/head/conv2d/kernel"][0, 0] + w["resnet/head/conv2d/bias"]
    return out


@pytest.fixture(scope="module")
def small_npz(tmp_path_factory):
    path = tmp_path_factory.mktemp("bit") / "BiT-M-R50x1-first-units.npz"
    return path, synthetic_npz(path)


def small_bit(path, **kwargs):
    return build_bit("R50x1", image_size=SIZE, weights=str(path), block_units=(1, 1), **kwargs)


def test_npz_mapping_matches_numpy_reference(small_npz):
    path, arrays = small_npz
    backbone = small_bit(path)
    assert backbone.feature_names == ("stem", "block1_unit01", "block2_unit01", "pre_logits")
    images = np.random.default_rng(1).random((2, SIZE, SIZE, 3)).astype(np.float32)
    got = backbone(images)
    want = reference(arrays, images)
    assert set(got) == set(want)
    for name, value in want.items():
        assert tuple(got[name].shape) == value.shape, name
        scale = max(1.0, float(np.abs(value).max()))
        np.testing.assert_allclose(np.asarray(got[name]), value, rtol=0, atol=2e-4 * scale, err_msg=name)
    assert backbone.value_range == (-1.0, 1.0)


def test_numbered_conv_names_are_accepted(tmp_path, small_npz):
    path = tmp_path / "renamed.npz"
    synthetic_npz(path, rename_conv=True)
    images = np.full((1, SIZE, SIZE, 3), 0.3, np.float32)
    a = np.asarray(small_bit(path)(images)["embedding"])
    b = np.asarray(small_bit(small_npz[0])(images)["embedding"])
    np.testing.assert_allclose(a, b, rtol=1e-6)


def test_shape_mismatch_names_first_layer_and_both_shapes(tmp_path, small_npz):
    arrays = dict(small_npz[1])
    arrays["resnet/block1/unit01/b/standardized_conv2d/kernel"] = np.zeros((1, 1, 64, 64), np.float32)
    arrays["resnet/head/conv2d/kernel"] = np.zeros((1, 1, 7, 10), np.float32)  # later: not the one reported
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    with pytest.raises(DataError, match=r"bad.npz: shape mismatch at Keras layer 'block1_unit01_b_conv'.*"
                                        r"has shape \(1, 1, 64, 64\).*expects \(3, 3, 64, 64\)"):
        small_bit(path)


def test_missing_key_and_foreign_keys(tmp_path, small_npz):
    arrays = dict(small_npz[1])
    del arrays["resnet/block2/unit01/a/proj/standardized_conv2d/kernel"]
    np.savez(tmp_path / "short.npz", **arrays)
    with pytest.raises(DataError, match=r"no 'resnet/block2/unit01/a/proj/standardized_conv2d/kernel'.*"
                                        r"block2_unit01_proj"):
        small_bit(tmp_path / "short.npz")
    deeper = tmp_path / "deeper.npz"
    synthetic_npz(deeper, units=(2, 1))  # a file with one more unit than the model
    with pytest.raises(DataError, match=r"fit no layer.*first: 'resnet/block1/unit02/"):
        small_bit(deeper)


def test_missing_file_names_path_and_download(tmp_path):
    with pytest.raises(DataError, match=rf"{tmp_path}/BiT-M-R50x1.npz not found.*wget "
                                        r"https://storage.googleapis.com/bit_models/BiT-M-R50x1.npz"):
        BACKBONES.create(f"bit_r50x1(image_size=32, weights_dir='{tmp_path}')")
    with pytest.raises(DataError, match=r"BiT-S-R101x3.npz not found"):
        build_bit("R101x3", image_size=SIZE, upstream="S", weights_dir=str(tmp_path))


def test_model_table_and_feature_names():
    units = {name: sum(c.block_units) for name, c in BIT_MODELS.items()}
    assert units == {"R50x1": 16, "R101x1": 33, "R50x3": 16, "R101x3": 33, "R152x4": 50}
    assert {name: c.width for name, c in BIT_MODELS.items()} == {"R50x1": 1, "R101x1": 1, "R50x3": 3,
                                                                  "R101x3": 3, "R152x4": 4}
    names = feature_names(BIT_MODELS["R152x4"].block_units)
    assert len(names) == 52 and names[:2] == ("stem", "block1_unit01") and names[-2:] == ("block4_unit03", "pre_logits")
    assert "block3_unit36" in names and "block3_unit37" not in names


def test_r50x1_named_features_at_32px():
    backbone = BACKBONES.create("bit_r50x1(image_size=32, weights=None)")
    assert backbone.id.startswith("bit_r50x1@random-")
    out = backbone(np.zeros((1, SIZE, SIZE, 3), np.float32))
    sides = {1: 8, 2: 4, 3: 2, 4: 1}
    assert tuple(out["stem"].shape) == (1, 8, 8, 64)
    for name in backbone.feature_names[1:-1]:
        block = int(name[5])
        assert tuple(out[name].shape) == (1, sides[block], sides[block], 256 * 2 ** (block - 1)), name
    assert tuple(out["pre_logits"].shape) == tuple(out["embedding"].shape) == (1, 2048)
    assert "logits" not in out  # random weights: no head


def test_mixed_precision_copy_of_bit(small_npz):
    from fewshot_bench.backbones.features import FeatureExtractor
    from fewshot_bench.tasks import Examples

    backbone = small_bit(small_npz[0])
    images = np.random.default_rng(2).random((4, SIZE, SIZE, 3)).astype(np.float32)
    examples = Examples(images, None, tuple(f"i{k}" for k in range(4)))
    layers = ("block1_unit01", "embedding")
    full = FeatureExtractor(backbone, layers=layers, cache_dir=None, mixed_precision=False).extract(examples)
    half_extractor = FeatureExtractor(backbone, layers=layers, cache_dir=None, mixed_precision=True)
    assert half_extractor.precision == "mixed_float16"
    np.testing.assert_allclose(half_extractor.extract(examples), full, rtol=0.05, atol=0.05 * np.abs(full).max())


@pytest.mark.slow
def test_r101x1_builds_at_32px():
    backbone = BACKBONES.create("bit_r101x1(image_size=32, weights=None)")
    assert len(backbone.feature_names) == 35
    out = backbone(np.zeros((1, SIZE, SIZE, 3), np.float32))
    assert tuple(out["block3_unit23"].shape) == (1, 2, 2, 1024)
