"""The plugin tests itself with fewshot_bench's conformance kit (one pytest item per check)."""

import pytest

from fewshot_bench.errors import ConfigError
from fewshot_bench.testing import CHECKS, check_learner, tiny_backbone
from nearest_centroid import NearestCentroid


@pytest.mark.parametrize("check", CHECKS)
def test_conformance(check):
    check_learner(NearestCentroid, checks=[check])


def test_cosine_metric_conforms():
    report = check_learner(lambda **kwargs: NearestCentroid(metric="cosine", **kwargs))
    assert min(report.accuracy.values()) > 0.9  # the kit's classes are well separated


def test_intermediate_layers_conform():
    check_learner(lambda **kwargs: NearestCentroid(layers=("embedding", "block2"), **kwargs))


def test_unknown_metric_is_refused():
    with pytest.raises(ConfigError, match="choose one of euclidean, cosine"):
        NearestCentroid(tiny_backbone(), metric="manhattan")
