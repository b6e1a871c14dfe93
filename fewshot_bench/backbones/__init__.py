"""Backbones: every built-in one registers itself in ``BACKBONES`` on import."""

from fewshot_bench.backbones.base import BACKBONES, Backbone
from fewshot_bench.backbones import efficientnet_lite  # noqa: F401  (registers "efficientnet_lite0")

__all__ = ["BACKBONES", "Backbone"]
