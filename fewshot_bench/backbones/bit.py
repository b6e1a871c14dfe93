"""BiT ResNet-v2 (Kolesnikov et al. 2020, "Big Transfer") in Keras 3, loading the official ``.npz`` files.

Architecture: pre-activation ResNet-v2 with Group Normalization (32 groups,
epsilon 1e-5, variance computed as the mean of squared deviations) and Weight
Standardization (each output channel's kernel standardised over H, W, in with
epsilon 1e-10) in every convolution. Root: zero-pad 3, 7x7/2 conv (64·w), zero-pad 1,
3x3/2 max-pool. Bottleneck unit (stride on the 3x3 conv):
``a`` = GN, ReLU -> 1x1 conv (f) [and, in the first unit of each block, a projection 1x1/s
conv (4f) of the same pre-activation]; ``b`` = GN, ReLU, zero-pad 1, 3x3/s conv (f);
``c`` = GN, ReLU, 1x1 conv (4f); output = ``c`` + shortcut. Blocks 1-4 use
f = 64·w, 128·w, 256·w, 512·w and strides 1, 2, 2, 2. Head: GN, ReLU,
global average (= pre-logits, the embedding), 1x1 conv to the classes.
Inputs are RGB in [-1, 1].

Weights: ``BiT-{S,M}-R{50,101,152}x{1,3,4}.npz`` (upstream models; the
``-ILSVRC2012`` files are fine-tuned on ImageNet-1k), downloaded by the user
from https://storage.googleapis.com/bit_models/ into
``$FEWSHOT_BENCH_HOME/weights`` (or any path). Key mapping (``B`` block 1-4,
``UU`` unit 01.., ``G`` one of a, b, c; Keras layout = file layout, HWIO kernels)::

    resnet/root_block/standardized_conv2d/kernel            -> root_conv.kernel (7, 7, 3, 64w)
    resnet/blockB/unitUU/G/group_norm/{gamma,beta}          -> blockB_unitUU_G_gn.{gamma,beta} (C,)
    resnet/blockB/unitUU/G/standardized_conv2d/kernel       -> blockB_unitUU_G_conv.kernel
    resnet/blockB/unitUU/a/proj/standardized_conv2d/kernel  -> blockB_unitUU_proj.kernel (1, 1, in, 4f), unit01 only
    resnet/group_norm/{gamma,beta}                          -> pre_head_gn.{gamma,beta}
    resnet/head/conv2d/kernel (1, 1, C, classes)            -> head.kernel (C, classes) = kernel[0, 0]
    resnet/head/conv2d/bias                                 -> head.bias

Some released files name a convolution ``standardized_conv2d_<n>``; the suffix
is dropped. Group-norm parameters stored with leading singleton axes are
flattened. The head (and the ``"logits"`` output) exists when the file has one.
"""

from __future__ import annotations

import dataclasses
import functools
import re
from pathlib import Path
from typing import Any, Optional

import gin
import numpy as np

from fewshot_bench.backbones.base import BACKBONES, Backbone
from fewshot_bench.backbones.weights import (check_image_size, model_digest, optional_path, path_digest,
                                             require_file, weights_home, weights_id)
from fewshot_bench.errors import ConfigError, DataError

VALUE_RANGE = (-1.0, 1.0)
GN_GROUPS = 32
GN_EPSILON = 1e-5
WS_EPSILON = 1e-10
DOWNLOAD_URL = "https://storage.googleapis.com/bit_models/{file}"


@dataclasses.dataclass(frozen=True)
class BitConfig:
    """Units per block and width factor of one BiT ResNet."""

    block_units: tuple[int, ...]
    width: int


BIT_MODELS = {
    "R50x1": BitConfig((3, 4, 6, 3), 1),
    "R101x1": BitConfig((3, 4, 23, 3), 1),
    "R50x3": BitConfig((3, 4, 6, 3), 3),
    "R101x3": BitConfig((3, 4, 23, 3), 3),
    "R152x4": BitConfig((3, 8, 36, 3), 4),
}


def unit_names(block_units: tuple[int, ...]) -> list[str]:
    """``block1_unit01, block1_unit02, ...``: one name per residual unit, as in the ``.npz`` keys."""
    return [f"block{b}_unit{u:02d}" for b, units in enumerate(block_units, start=1) for u in range(1, units + 1)]


def feature_names(block_units: tuple[int, ...]) -> tuple[str, ...]:
    """Stem, every unit's output, pre-logits."""
    return ("stem", *unit_names(block_units), "pre_logits")


@functools.cache
def _layers():
    """The two BiT layer types (defined on first use so that importing this module needs no Keras)."""
    import keras
    from keras import ops

    class StandardizedConv2D(keras.layers.Conv2D):
        """Conv2D whose kernel is standardised per output channel before use (Weight Standardization)."""

        def convolution_op(self, inputs, kernel):
            k = ops.cast(kernel, "float32")
            mean = ops.mean(k, axis=(0, 1, 2), keepdims=True)
            var = ops.mean(ops.square(k - mean), axis=(0, 1, 2), keepdims=True)
            k = (k - mean) / ops.sqrt(var + WS_EPSILON)
            return super().convolution_op(inputs, ops.cast(k, inputs.dtype))

    class GroupNorm(keras.layers.Layer):
        """Group normalization with BiT's variance (mean of squared deviations), in float32."""

        def __init__(self, groups: int = GN_GROUPS, epsilon: float = GN_EPSILON, **kwargs):
            super().__init__(**kwargs)
            self.groups, self.epsilon = groups, epsilon

        def build(self, input_shape):
            channels = input_shape[-1]
            if channels % self.groups:
                raise ConfigError(f"{self.name}: {channels} channels do not split into {self.groups} groups")
            self.gamma = self.add_weight(shape=(channels,), initializer="ones", name="gamma")
            self.beta = self.add_weight(shape=(channels,), initializer="zeros", name="beta")

        def call(self, x):
            shape = ops.shape(x)
            channels = x.shape[-1]
            g = ops.reshape(ops.cast(x, "float32"), (-1, shape[1], shape[2], self.groups, channels // self.groups))
            mean = ops.mean(g, axis=(1, 2, 4), keepdims=True)
            var = ops.mean(ops.square(g - mean), axis=(1, 2, 4), keepdims=True)
            g = (g - mean) / ops.sqrt(var + self.epsilon)
            y = ops.reshape(g, shape) * ops.cast(self.gamma, "float32") + ops.cast(self.beta, "float32")
            return ops.cast(y, self.compute_dtype)

        def get_config(self):
            return {**super().get_config(), "groups": self.groups, "epsilon": self.epsilon}

    return StandardizedConv2D, GroupNorm


def build_model(image_size: int, config: BitConfig, num_classes: Optional[int] = None, name: str = "bit"):
    """The Keras functional model (random weights): images in [-1, 1] -> dict of outputs."""
    import keras
    from keras import layers

    StdConv, GroupNorm = _layers()

    def conv(x, filters: int, kernel: int, stride: int, layer_name: str):
        if kernel > 1:
            x = layers.ZeroPadding2D((kernel - 1) // 2, name=f"{layer_name}_pad")(x)
        return StdConv(filters, kernel, strides=stride, padding="valid", use_bias=False, name=layer_name)(x)

    def gn_relu(x, layer_name: str):
        return layers.ReLU(name=f"{layer_name}_relu")(GroupNorm(name=f"{layer_name}_gn")(x))

    inputs = keras.Input((image_size, image_size, 3), name="images")
    outputs = {}
    x = conv(inputs, 64 * config.width, 7, 2, "root_conv")
    x = layers.ZeroPadding2D(1, name="root_pool_pad")(x)
    x = outputs["stem"] = layers.MaxPooling2D(3, strides=2, padding="valid", name="root_pool")(x)
    for b, units in enumerate(config.block_units, start=1):
        filters = 64 * config.width * 2 ** (b - 1)
        for u in range(1, units + 1):
            prefix = f"block{b}_unit{u:02d}"
            stride = 2 if b > 1 and u == 1 else 1
            preact = gn_relu(x, f"{prefix}_a")
            shortcut = x
            if stride != 1 or x.shape[-1] != 4 * filters:
                shortcut = conv(preact, 4 * filters, 1, stride, f"{prefix}_proj")
            h = conv(preact, filters, 1, 1, f"{prefix}_a_conv")
            h = conv(gn_relu(h, f"{prefix}_b"), filters, 3, stride, f"{prefix}_b_conv")
            h = conv(gn_relu(h, f"{prefix}_c"), 4 * filters, 1, 1, f"{prefix}_c_conv")
            x = outputs[prefix] = layers.Add(name=f"{prefix}_add")([h, shortcut])
    x = gn_relu(x, "pre_head")
    outputs["pre_logits"] = outputs["embedding"] = layers.GlobalAveragePooling2D(name="pre_logits")(x)
    if num_classes:
        outputs["logits"] = layers.Dense(num_classes, name="head")(outputs["embedding"])
    return keras.Model(inputs, outputs, name=name)


_CONV_SUFFIX = re.compile(r"/standardized_conv2d_\d+/")


def read_npz(path: Path) -> dict[str, np.ndarray]:
    """The arrays of a BiT ``.npz``, keys normalised (``standardized_conv2d_<n>`` -> ``standardized_conv2d``)."""
    try:
        with np.load(path, allow_pickle=False) as data:
            return {_CONV_SUFFIX.sub("/standardized_conv2d/", key): data[key] for key in data.files}
    except (OSError, ValueError, EOFError) as e:
        raise DataError(f"{path}: not a readable .npz file ({e}); download it again") from e


def weight_map(config: BitConfig, head: bool) -> list[tuple[str, str, str]]:
    """(Keras layer, variable index name, ``.npz`` key) for every weight, input to output."""
    table = [("root_conv", "kernel", "resnet/root_block/standardized_conv2d/kernel")]
    for name in unit_names(config.block_units):
        block, unit = name.split("_")
        prefix = f"resnet/{block}/{unit}"
        table += [(f"{name}_a_gn", "gamma", f"{prefix}/a/group_norm/gamma"),
                  (f"{name}_a_gn", "beta", f"{prefix}/a/group_norm/beta")]
        if unit == "unit01":
            table.append((f"{name}_proj", "kernel", f"{prefix}/a/proj/standardized_conv2d/kernel"))
        for group in "abc":
            if group != "a":
                table += [(f"{name}_{group}_gn", "gamma", f"{prefix}/{group}/group_norm/gamma"),
                          (f"{name}_{group}_gn", "beta", f"{prefix}/{group}/group_norm/beta")]
            table.append((f"{name}_{group}_conv", "kernel", f"{prefix}/{group}/standardized_conv2d/kernel"))
    table += [("pre_head_gn", "gamma", "resnet/group_norm/gamma"), ("pre_head_gn", "beta", "resnet/group_norm/beta")]
    if head:
        table += [("head", "kernel", "resnet/head/conv2d/kernel"), ("head", "bias", "resnet/head/conv2d/bias")]
    return table


def _to_keras(key: str, value: np.ndarray) -> np.ndarray:
    if key.endswith("/group_norm/gamma") or key.endswith("/group_norm/beta"):
        return value.reshape(-1) if value.ndim > 1 and all(s == 1 for s in value.shape[:-1]) else value
    if key == "resnet/head/conv2d/kernel" and value.ndim == 4 and value.shape[:2] == (1, 1):
        return value[0, 0]
    return value


def load_weights(model, weights: dict[str, np.ndarray], config: BitConfig, source: str, model_name: str) -> None:
    """Copy BiT ``.npz`` arrays into ``model``.

    Raises DataError naming ``source`` for a missing key, the first layer
    whose shape differs (both shapes given) or keys that fit no layer.
    """
    head = "resnet/head/conv2d/kernel" in weights
    used = set()
    for layer_name, variable_name, key in weight_map(config, head):
        if key not in weights:
            raise DataError(f"{source}: no {key!r} (for Keras layer {layer_name!r}); the file is not a BiT "
                            f"{model_name} checkpoint, download BiT-M-{model_name}.npz from "
                            f"{DOWNLOAD_URL.format(file='')}")
        used.add(key)
        value = _to_keras(key, weights[key])
        variable = next(v for v in model.get_layer(layer_name).weights if v.name == variable_name)
        if tuple(value.shape) != tuple(variable.shape):
            raise DataError(f"{source}: shape mismatch at Keras layer {layer_name!r} ({variable.path}): the file's "
                            f"{key!r} has shape {tuple(weights[key].shape)}, the {model_name} model expects "
                            f"{tuple(variable.shape)}; use a BiT {model_name} file")
        variable.assign(value.astype(np.float32))
    unused = sorted(k for k in weights if k not in used)
    if unused:
        raise DataError(f"{source}: {len(unused)} arrays fit no layer of BiT {model_name} (first: {unused[0]!r}); "
                        f"the file holds another BiT model")


def default_weights_file(model: str, upstream: str, weights_dir: Optional[str | Path]) -> Path:
    directory = optional_path(weights_dir) or weights_home()
    return directory / f"BiT-{upstream}-{model}.npz"


_AUTO = "auto"


@gin.configurable("bit")
def build_bit(model: str = "R50x1", image_size: int = 224, weights: Optional[str] = _AUTO, upstream: str = "M",
              weights_dir: Optional[str] = None, block_units: Optional[tuple[int, ...]] = None,
              width: Optional[int] = None) -> Backbone:
    """A BiT ResNet-v2.

    Args:
      model: one of :data:`BIT_MODELS` (``"R50x1"`` ... ``"R152x4"``).
      image_size: input side (BiT-HyperRule: 128 for images up to 96x96 px, else 384 or 480).
      weights: an ``.npz`` path; ``"auto"``: ``<weights_dir>/BiT-<upstream>-<model>.npz``;
        None: random weights (for training or tests).
      upstream: ``"M"`` (ImageNet-21k) or ``"S"`` (ImageNet-1k), for ``"auto"``.
      weights_dir: where ``"auto"`` looks (default ``$FEWSHOT_BENCH_HOME/weights``).
      block_units, width: a custom depth/width instead of ``model``'s (named after ``model``).
    """
    if model not in BIT_MODELS:
        raise ConfigError(f"bit: unknown model {model!r}; choose one of {', '.join(BIT_MODELS)}")
    config = BIT_MODELS[model]
    if block_units is not None or width is not None:
        config = BitConfig(tuple(block_units or config.block_units), int(width or config.width))
    name = f"bit_{model.lower()}" if config == BIT_MODELS[model] else \
        f"bit_{'-'.join(map(str, config.block_units))}x{config.width}"
    check_image_size(name, image_size, 32, "BiT downsamples by 32; BiT-HyperRule uses 128, 384 or 480")
    path = None
    if weights is not None:
        path = default_weights_file(model, upstream, weights_dir) if weights == _AUTO else optional_path(weights)
        file = path.name if weights == _AUTO else f"BiT-M-{model}.npz"
        require_file(path, f"BiT {model} weights", f"download them with `wget {DOWNLOAD_URL.format(file=file)} "
                     f"-O {path}` (BiT-S-* for the ImageNet-1k upstream), or pass weights=PATH; "
                     f"weights=None builds random weights")
    arrays = read_npz(path) if path is not None else {}
    head = arrays.get("resnet/head/conv2d/kernel")
    num_classes = int(head.shape[-1]) if head is not None else None
    keras_model = build_model(image_size, config, num_classes, name=name)
    if path is not None:
        load_weights(keras_model, arrays, config, str(path), model)
        wid = weights_id(path_digest(path))
    else:
        wid = "random-" + weights_id(model_digest(keras_model))
    return Backbone(name=name, model=keras_model, image_size=image_size, value_range=VALUE_RANGE,
                    feature_names=feature_names(config.block_units), weights_id=wid)


def _register(model: str) -> None:
    def factory(**kwargs: Any) -> Backbone:  # arguments not given come from gin (``bit.*``), then defaults
        return build_bit(model=model, **kwargs)

    factory.__doc__ = f"BiT-{model} (ResNet-v2, GN+WS); weights: .npz path, 'auto' or None (random)."
    BACKBONES.register(f"bit_{model.lower()}")(factory)


for _model in BIT_MODELS:
    _register(_model)
