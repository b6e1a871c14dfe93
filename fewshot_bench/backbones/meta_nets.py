"""Meta-learning backbones as used for Meta-Dataset: Conv-4 and ResNet-18 (Keras 3, trainable).

Both follow Meta-Dataset's backbones (Triantafillou et al. 2020) and take RGB
in [-1, 1] (MD maps pixels ``x`` to ``2 * (x / 255 - 0.5)``) at 84 px (MD) or
126 px; any size from ``MIN_SIZE`` up works. They start from random weights
(``seed``) or from a Keras weights file (``checkpoint``, written by
``backbone.model.save_weights(...)``), and are ordinary Keras models whose
batch norm layers learn when called with ``training=True``.

- Conv-4: four blocks of 3x3 conv (64 filters, "same"), batch norm, ReLU,
  2x2 max-pool (stride 2, "valid"); embedding = the last block flattened
  (64 * 5 * 5 = 1600 at 84 px). Features ``block1`` ... ``block4``.
- ResNet-18: 7x7/2 conv (64), batch norm, ReLU, 3x3/2 max-pool ("same"), then
  four stages of two basic units (3x3 conv, BN, ReLU, 3x3 conv, BN, plus the
  shortcut -- a 1x1 conv + BN where the shape changes -- then ReLU) with 64,
  128, 256, 512 filters and strides 1, 2, 2, 2; embedding = global average
  (512). Features ``stem``, ``block1_unit01`` ... ``block4_unit02``, ``pre_logits``.
"""

from __future__ import annotations

from typing import Any, Optional

import gin

from fewshot_bench.backbones.base import BACKBONES, Backbone
from fewshot_bench.backbones.weights import (check_image_size, load_keras_weights, model_digest, optional_path,
                                             path_digest, require_file, weights_id)
from fewshot_bench.errors import ConfigError

VALUE_RANGE = (-1.0, 1.0)
BN_EPSILON = 1e-3
MIN_SIZE = {"conv4": 16, "resnet18": 32}
CONV4_FILTERS = 64
RESNET18_FILTERS = (64, 128, 256, 512)


def conv4_feature_names() -> tuple[str, ...]:
    return tuple(f"block{i}" for i in range(1, 5))


def resnet18_feature_names() -> tuple[str, ...]:
    units = tuple(f"block{b}_unit{u:02d}" for b in range(1, 5) for u in (1, 2))
    return ("stem", *units, "pre_logits")


def build_conv4(image_size: int, seed: int = 0):
    """The Conv-4 Keras model (random weights): images -> dict of outputs."""
    import keras
    from keras import layers

    inputs = keras.Input((image_size, image_size, 3), name="images")
    outputs = {}
    x = inputs
    for i in range(1, 5):
        x = layers.Conv2D(CONV4_FILTERS, 3, padding="same", name=f"block{i}_conv",
                          kernel_initializer=keras.initializers.HeNormal(seed=seed * 100 + i))(x)
        x = layers.BatchNormalization(epsilon=BN_EPSILON, name=f"block{i}_bn")(x)
        x = layers.ReLU(name=f"block{i}_relu")(x)
        x = outputs[f"block{i}"] = layers.MaxPooling2D(2, strides=2, padding="valid", name=f"block{i}_pool")(x)
    outputs["embedding"] = layers.Flatten(name="flatten")(x)
    return keras.Model(inputs, outputs, name="conv4")


def build_resnet18(image_size: int, seed: int = 0):
    """The ResNet-18 Keras model (random weights): images -> dict of outputs."""
    import keras
    from keras import layers

    count = iter(range(1000))

    def conv(x, filters: int, kernel: int, stride: int, name: str):
        init = keras.initializers.HeNormal(seed=seed * 1000 + next(count))
        return layers.Conv2D(filters, kernel, strides=stride, padding="same", use_bias=False, name=name,
                             kernel_initializer=init)(x)

    def bn(x, name: str):
        return layers.BatchNormalization(epsilon=BN_EPSILON, name=name)(x)

    inputs = keras.Input((image_size, image_size, 3), name="images")
    outputs = {}
    x = layers.ReLU(name="stem_relu")(bn(conv(inputs, 64, 7, 2, "stem_conv"), "stem_bn"))
    x = outputs["stem"] = layers.MaxPooling2D(3, strides=2, padding="same", name="stem_pool")(x)
    for b, filters in enumerate(RESNET18_FILTERS, start=1):
        for u in (1, 2):
            prefix = f"block{b}_unit{u:02d}"
            stride = 2 if b > 1 and u == 1 else 1
            h = layers.ReLU(name=f"{prefix}_relu1")(bn(conv(x, filters, 3, stride, f"{prefix}_conv1"), f"{prefix}_bn1"))
            h = bn(conv(h, filters, 3, 1, f"{prefix}_conv2"), f"{prefix}_bn2")
            shortcut = x
            if stride != 1 or x.shape[-1] != filters:
                shortcut = bn(conv(x, filters, 1, stride, f"{prefix}_proj"), f"{prefix}_proj_bn")
            x = layers.Add(name=f"{prefix}_add")([h, shortcut])
            x = outputs[prefix] = layers.ReLU(name=f"{prefix}_out")(x)
    outputs["pre_logits"] = outputs["embedding"] = layers.GlobalAveragePooling2D(name="pre_logits")(x)
    return keras.Model(inputs, outputs, name="resnet18")


_BUILDERS = {"conv4": (build_conv4, conv4_feature_names), "resnet18": (build_resnet18, resnet18_feature_names)}


@gin.configurable("meta_backbone")
def build_meta_backbone(arch: str = "conv4", image_size: int = 84, checkpoint: Optional[str] = None,
                        seed: int = 0) -> Backbone:
    """Conv-4 or ResNet-18, from random weights (``seed``) or a Keras weights file (``checkpoint``)."""
    if arch not in _BUILDERS:
        raise ConfigError(f"meta_backbone: unknown arch {arch!r}; choose one of {', '.join(_BUILDERS)}")
    build, names = _BUILDERS[arch]
    check_image_size(arch, image_size, MIN_SIZE[arch], "Meta-Dataset uses 84 (126 also common)")
    model = build(image_size, seed)
    if checkpoint is not None:
        path = require_file(optional_path(checkpoint), f"{arch} checkpoint",
                            "write one with backbone.model.save_weights('<name>.weights.h5') after training, "
                            "or leave checkpoint unset to start from random weights")
        load_keras_weights(model, str(path), f"{arch}", f"use a checkpoint saved from the {arch} backbone")
        wid = weights_id(path_digest(path))
    else:
        wid = "random-" + weights_id(model_digest(model))
    return Backbone(name=arch, model=model, image_size=image_size, value_range=VALUE_RANGE,
                    feature_names=names(), weights_id=wid)


@BACKBONES.register("conv4")
def conv4(**kwargs: Any) -> Backbone:
    """Conv-4 (Meta-Dataset): ``conv4(image_size=84, checkpoint=None, seed=0)``."""
    return build_meta_backbone(arch="conv4", **kwargs)


@BACKBONES.register("resnet18")
def resnet18(**kwargs: Any) -> Backbone:
    """ResNet-18 (Meta-Dataset): ``resnet18(image_size=84, checkpoint=None, seed=0)``."""
    return build_meta_backbone(arch="resnet18", **kwargs)
