import math

import pytest

from fewshot_bench.evaluation.scores import Row, mean_and_interval, pooled_accuracy, summarize
from fewshot_bench.tasks import EPISODES, POOLED


def test_pooled_accuracy_is_not_a_mean_of_chunk_accuracies():
    # chunks: 9/10 and 1/2 -> pooled 10/12, whereas the mean of chunks would be 0.7
    assert pooled_accuracy([9, 1], [10, 2]) == pytest.approx(10 / 12)


def test_interval_uses_population_std():
    # accuracies 0.5, 0.7, 0.9: mean 0.7; population variance = (0.04+0+0.04)/3
    mean, half = mean_and_interval([0.5, 0.7, 0.9])
    assert mean == pytest.approx(0.7)
    assert half == pytest.approx(1.96 * math.sqrt(0.08 / 3) / math.sqrt(3))


def test_interval_of_identical_episodes_is_zero():
    assert mean_and_interval([0.25] * 4) == (pytest.approx(0.25), 0.0)


def _vtab(name, group, correct, total):
    return Row(name, group, "vtab", POOLED, name, correct, total)


def _md(source, index, correct, total):
    return Row(source, "md", "md", EPISODES, str(index), correct, total)


def test_summary_hand_computed():
    rows = [_vtab("a", "natural", 80, 100), _vtab("b", "natural", 60, 100),
            _vtab("c", "structured", 30, 100),
            _md("s", 0, 1, 2), _md("s", 1, 2, 2), _md("t", 0, 3, 4)]
    summary = summarize(rows, {"a": 1, "b": 1, "c": 1, "s": 2, "t": 1})
    assert summary.complete and not summary.failed
    by = {s.source: s for s in summary.sources}
    assert by["s"].accuracy == pytest.approx(0.75)
    assert by["s"].interval == pytest.approx(1.96 * 0.25 / math.sqrt(2))
    assert by["a"].interval is None
    assert summary.group_means["natural"] == pytest.approx(0.7)
    assert summary.group_means["structured"] == pytest.approx(0.3)
    # VTAB mean is task-weighted: (0.8+0.6+0.3)/3, not the mean of group means (0.5)
    assert summary.benchmark_means["vtab"] == pytest.approx(1.7 / 3)
    assert summary.benchmark_means["md"] == pytest.approx((0.75 + 0.75) / 2)
    assert summary.overall == pytest.approx((0.8 + 0.6 + 0.3 + 0.75 + 0.75) / 5)


def test_incomplete_summary_withholds_means_unless_partial():
    rows = [_vtab("a", "natural", 80, 100),
            Row("b", "natural", "vtab", POOLED, "b", 0, 0, status="failed", error="boom")]
    summary = summarize(rows, {"a": 1, "b": 1, "c": 1})
    assert not summary.complete
    assert summary.overall is None and not summary.group_means
    assert summary.failed == ("b/b: boom",)
    assert summary.missing == ("b: 0/1 done", "c: 0/1 done")
    partial = summarize(rows, {"a": 1, "b": 1, "c": 1}, partial=True)
    assert partial.overall == pytest.approx(0.8)
