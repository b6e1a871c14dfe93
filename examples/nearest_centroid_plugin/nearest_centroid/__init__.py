"""A nearest-centroid learner for fewshot_bench, installed as a plugin (entry point ``nearest_centroid``)."""

from nearest_centroid.learner import NearestCentroid

__all__ = ["NearestCentroid"]
