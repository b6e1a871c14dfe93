"""Keras Applications backbones: ResNet50, ResNet50V2 and EfficientNetB0-B7.

Weights: a local file (the ``*_notop.h5`` files Keras downloads into
``~/.keras/models``, or any ``.weights.h5`` / ``.keras`` / ``.h5`` written by
``model.save_weights``), ``"imagenet"`` (downloaded by Keras, so only when the
machine is online), or None (random).

Input contracts (images arrive in ``value_range``, RGB):

- ResNet50 ("caffe" preprocessing): [0, 255], then, inside the model, RGB ->
  BGR and minus the ImageNet mean (103.939, 116.779, 123.68).
- ResNet50V2 ("tf" preprocessing): [-1, 1].
- EfficientNet: [0, 255]; the model rescales and normalises itself. Keras adds
  a per-channel ``1/sqrt(std)`` rescaling only when it downloads the weights
  itself (``weights="imagenet"``, keras issue tensorflow#49930); for ImageNet
  weights from a file the same correction is applied to the Normalization
  layer's variance (``imagenet_rescaling``, default on for files).

Named features: ResNets: ``stem`` (after the stem max-pool), every residual
unit as ``block<stage>_unit<NN>`` (Keras ``conv<stage+1>_block<N>_out``), and
``pre_logits``; EfficientNet: ``stem``, every block ``block1a``... (its output:
``add`` or ``project_bn``), ``head`` (``top_activation``).
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any, Optional

import gin
import numpy as np

from fewshot_bench.backbones.base import BACKBONES, Backbone
from fewshot_bench.backbones.weights import (check_image_size, load_keras_weights, model_digest, optional_path,
                                             path_digest, weights_id)
from fewshot_bench.errors import ConfigError, DataError

CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)
# keras.applications.efficientnet.IMAGENET_STDDEV_RGB
IMAGENET_STDDEV_RGB = (0.229, 0.224, 0.225)


@dataclasses.dataclass(frozen=True)
class KerasApp:
    """How to build one Keras application and read its features."""

    constructor: str
    value_range: tuple[float, float]
    family: str  # "resnet", "resnet_v2" or "efficientnet"


KERAS_APPS = {
    "resnet50": KerasApp("ResNet50", (0.0, 255.0), "resnet"),
    "resnet50v2": KerasApp("ResNet50V2", (-1.0, 1.0), "resnet_v2"),
    **{f"efficientnet_b{i}": KerasApp(f"EfficientNetB{i}", (0.0, 255.0), "efficientnet") for i in range(8)},
}

LAST_LAYER = {"resnet": "conv5_block3_out", "resnet_v2": "post_relu", "efficientnet": "top_activation"}
_UNIT = re.compile(r"^conv(\d)_block(\d+)_out$")
_BLOCK = re.compile(r"^(block\d+[a-z])_")


def feature_layers(model: Any, family: str) -> dict[str, str]:
    """Feature name -> Keras layer name, input to output (see the module docstring)."""
    names = [layer.name for layer in model.layers]
    if family in ("resnet", "resnet_v2"):
        table = {"stem": "pool1_pool"}
        for name in names:
            match = _UNIT.match(name)
            if match:
                table[f"block{int(match[1]) - 1}_unit{int(match[2]):02d}"] = name
        return table
    table = {"stem": "stem_activation"}
    for name in names:  # the last layer of each block is its output
        match = _BLOCK.match(name)
        if match:
            table[match[1]] = name
    table["head"] = "top_activation"
    return table


def _caffe_layer():
    import keras
    from keras import ops

    class CaffePreprocess(keras.layers.Layer):
        """RGB [0, 255] -> BGR minus the ImageNet mean (Keras' "caffe" mode)."""

        def call(self, x):
            return ops.flip(x, axis=-1) - ops.cast(ops.convert_to_tensor(CAFFE_MEAN_BGR), x.dtype)

    return CaffePreprocess


def _load_app(app: KerasApp, image_size: int, weights: Optional[str], include_top: bool, input_tensor=None):
    import keras

    constructor = getattr(keras.applications, app.constructor)
    kwargs: dict[str, Any] = dict(include_top=include_top, weights=None, input_shape=(image_size, image_size, 3))
    if include_top:
        kwargs["classifier_activation"] = None
    if input_tensor is not None:
        kwargs["input_tensor"] = input_tensor
    if weights != "imagenet":
        model = constructor(**kwargs)
        if weights is not None:
            load_keras_weights(model, weights, f"Keras {app.constructor}",
                               f"use weights saved from keras.applications.{app.constructor} with the same "
                               f"include_top")
        return model
    try:
        return constructor(**{**kwargs, "weights": "imagenet"})
    except Exception as error:  # noqa: BLE001 -- download failures come in many types
        raise DataError(f"Keras could not fetch the ImageNet weights of {app.constructor} ({error}); offline "
                        f"machines: copy ~/.keras/models/ from a machine where keras.applications."
                        f"{app.constructor}(weights='imagenet', include_top={include_top}) ran, and pass "
                        f"weights='<that folder>/<file>.h5'") from error


def _imagenet_rescale(model: Any) -> None:
    """Keras' ``weights="imagenet"`` extra ``1/sqrt(std)`` rescaling, folded into the Normalization variance."""
    layer = next(layer for layer in model.layers if type(layer).__name__ == "Normalization")
    variance = layer.adapt_variance.numpy().reshape(-1)
    layer.adapt_variance.assign((variance * np.asarray(IMAGENET_STDDEV_RGB)).reshape(layer.adapt_variance.shape))
    layer.finalize_state()


@gin.configurable("keras_application")
def build_keras_application(app: str = "resnet50", image_size: int = 224, weights: Optional[str] = "imagenet",
                            include_top: bool = False, imagenet_rescaling: Optional[bool] = None) -> Backbone:
    """A Keras Applications backbone.

    Args:
      app: one of :data:`KERAS_APPS`.
      image_size: input side (32 or more).
      weights: a local weights file, ``"imagenet"`` (needs the network) or None (random).
      include_top: also build the ImageNet classifier (``"logits"``); the weights must have it.
      imagenet_rescaling: EfficientNet only; default: on for ``"imagenet"`` and files, off for None.
    """
    import keras

    if app not in KERAS_APPS:
        raise ConfigError(f"keras_application: unknown app {app!r}; choose one of {', '.join(KERAS_APPS)}")
    spec = KERAS_APPS[app]
    name = f"keras_{app}"
    check_image_size(name, image_size, 32, "224 is the size the ImageNet weights were trained at")
    if weights not in (None, "imagenet"):
        path = optional_path(weights)
        if not path.is_file():
            raise DataError(f"Keras {spec.constructor} weights {path} not found; on a machine with internet, "
                            f"keras.applications.{spec.constructor}(weights='imagenet', include_top={include_top}) "
                            f"saves them under ~/.keras/models/ (copy that file here), or save your own with "
                            f"model.save_weights('<name>.weights.h5'); weights=None builds random weights")
        weights = str(path)
    if include_top and weights == "imagenet" and image_size != 224:
        raise ConfigError(f"{name}: include_top=True with ImageNet weights needs image_size=224")

    inputs = keras.Input((image_size, image_size, 3), name="images")
    x = _caffe_layer()(name="caffe_preprocess")(inputs) if spec.family == "resnet" else inputs
    base = _load_app(spec, image_size, weights, include_top, input_tensor=x)
    if spec.family != "efficientnet" or weights == "imagenet":  # Keras rescales by itself for "imagenet"
        rescale = spec.family == "efficientnet"
    else:
        rescale = imagenet_rescaling if imagenet_rescaling is not None else weights is not None
        if rescale:
            _imagenet_rescale(base)
    table = feature_layers(base, spec.family)
    outputs = {feature: base.get_layer(layer).output for feature, layer in table.items()}
    last = base.get_layer(LAST_LAYER[spec.family]).output
    embedding = keras.layers.GlobalAveragePooling2D(name="pre_logits")(last)
    if spec.family != "efficientnet":
        outputs["pre_logits"] = embedding
    outputs["embedding"] = embedding
    if include_top:
        outputs["logits"] = base.output
    model = keras.Model(inputs, outputs, name=name)
    options = dict(include_top=include_top, imagenet_rescaling=bool(rescale))
    if weights == "imagenet":
        wid = weights_id(model_digest(model), **options)
    elif weights is not None:
        wid = weights_id(path_digest(optional_path(weights)), **options)
    else:
        wid = "random-" + weights_id(model_digest(model), **options)
    feature_names = tuple(n for n in outputs if n not in ("embedding", "logits"))
    return Backbone(name=name, model=model, image_size=image_size, value_range=spec.value_range,
                    feature_names=feature_names, weights_id=wid)


def _register(app: str) -> None:
    def factory(**kwargs: Any) -> Backbone:  # arguments not given come from gin (``keras_application.*``)
        return build_keras_application(app=app, **kwargs)

    factory.__doc__ = f"Keras {KERAS_APPS[app].constructor}; weights: a file, 'imagenet' (online) or None."
    BACKBONES.register(f"keras_{app}")(factory)


for _app in KERAS_APPS:
    _register(_app)
