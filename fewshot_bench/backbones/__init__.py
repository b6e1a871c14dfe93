"""Backbones: every built-in one registers itself in ``BACKBONES`` on import.

Importing this package needs no TensorFlow; each family imports Keras when a
backbone is built. ``meta_trained`` (a backbone ``fewshot-bench train`` wrote)
is defined with meta-training in the learners package, which is imported when
``BACKBONES`` first lists or resolves a name it does not hold yet.
"""

from fewshot_bench.backbones.base import BACKBONES, Backbone
from fewshot_bench.backbones import efficientnet_lite  # noqa: F401  (registers "efficientnet_lite0")
from fewshot_bench.backbones import bit  # noqa: F401  (bit_r50x1, bit_r101x1, bit_r50x3, bit_r101x3, bit_r152x4)
from fewshot_bench.backbones import keras_apps  # noqa: F401  (keras_resnet50, keras_resnet50v2, keras_efficientnet_b0..b7)
from fewshot_bench.backbones import meta_nets  # noqa: F401  (conv4, resnet18)
from fewshot_bench.backbones import savedmodel  # noqa: F401  (saved_model)

BACKBONES.add_builtin_module("fewshot_bench.learners.meta_training")  # meta_trained

__all__ = ["BACKBONES", "Backbone"]
