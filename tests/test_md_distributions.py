"""Sampled distributions match the protocol's formulas (fixed seeds, so the outcome is deterministic)."""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path

import numpy as np
from scipy import stats

from fewshot_bench.datasets.meta_dataset.sampler import EpisodeConfig, EpisodeSampler
from fewshot_bench.datasets.meta_dataset.spec import load_spec, parse_spec

SPECS = Path(__file__).resolve().parents[1].parent / "shared" / "meta_dataset" / "dataset_specs"
P_MIN = 1e-3  # a correct sampler fails a test with at most this probability (for a given seed: never)


def episodes(spec, split, n, config=None, seed=0):
    sampler = EpisodeSampler(spec, split, config)
    return sampler, [sampler.episode(seed, i) for i in range(n)]


def uniform_fit(values, low, high):
    """Chi-square p-value of ``values`` against the uniform law on low..high."""
    counts = Counter(values)
    observed = [counts.get(v, 0) for v in range(low, high + 1)]
    assert sum(observed) == len(values), "values outside the range"
    return stats.chisquare(observed).pvalue


def test_ways_and_classes_are_uniform_on_a_flat_source():
    spec = load_spec(SPECS / "aircraft_dataset_spec.json")   # 15 test classes
    _, eps = episodes(spec, "test", 3300)
    assert uniform_fit([e.num_ways for e in eps], 5, 15) > P_MIN
    # class c is chosen with probability E[N] / 15 = 10 / 15
    chosen = Counter(c for e in eps for c in e.classes)
    expected = len(eps) * 10 / 15
    sd = math.sqrt(len(eps) * (10 / 15) * (5 / 15))
    assert all(abs(chosen[c] - expected) < 4 * sd for c in spec.classes("test"))


def big_classes_spec(counts):
    return parse_spec({"name": "big", "__class__": "DatasetSpecification",
                       "classes_per_split": {"TRAIN": 0, "VALID": 0, "TEST": len(counts)},
                       "images_per_class": {str(i): n for i, n in enumerate(counts)}})


def test_support_set_size_is_uniform_as_beta_implies():
    """5 classes of 1000 images: q = 10, S = 5 * (floor(100 beta) + 1), and sum_c k_c lies in
    [S - 4, S] (each of the 5 floors loses less than one), so S / 5 = ceil(sum k / 5) ~ U{1..100}."""
    spec = big_classes_spec([1000] * 5)
    _, eps = episodes(spec, "test", 4000, EpisodeConfig(max_ways_upper_bound=5))
    assert all(e.query == (10,) * 5 for e in eps)
    recovered = [math.ceil(sum(e.shots) / 5) for e in eps]
    assert uniform_fit(recovered, 1, 100) > P_MIN


def test_shots_follow_size_and_log_weight_proportions():
    """k_c = floor(p_c (S - N)) + 1 with p_c proportional to n_c exp(u_c): compare mean shots per class
    with a direct simulation of the formulas."""
    counts = np.array([1000, 1000, 2000, 2000, 4000])
    spec = big_classes_spec(counts.tolist())
    _, eps = episodes(spec, "test", 4000, EpisodeConfig(max_ways_upper_bound=5), seed=1)
    shots = np.zeros((len(eps), 5))
    for row, e in enumerate(eps):
        shots[row, list(e.classes)] = e.shots
    rng = np.random.default_rng(12345)
    draws = 200_000
    beta = rng.uniform(size=draws)
    size = np.minimum(500, 5 * np.floor(beta * 100 + 1))
    weights = counts * np.exp(rng.uniform(math.log(0.5), math.log(2), size=(draws, 5)))
    simulated = np.floor(weights / weights.sum(1, keepdims=True) * (size - 5)[:, None]) + 1
    standard_error = shots.std(0) / math.sqrt(len(eps))
    assert np.all(np.abs(shots.mean(0) - simulated.mean(0)) < 4 * standard_error)
    # log-weights in [log 0.5, log 2]: p_i / p_j <= 4 n_i / n_j, hence k_i - 1 < 4 (n_i / n_j) k_j
    for i in range(5):
        for j in range(5):
            assert np.all(shots[:, i] - 1 < 4 * counts[i] / counts[j] * shots[:, j])


def test_ilsvrc_classes_follow_the_node_choice():
    """A node is uniform among the eligible ones, then min(50, span) of its leaves are drawn, so leaf l
    appears with probability (1 / |E|) * sum over eligible nodes v containing l of min(1, 50 / |v|)."""
    spec = load_spec(SPECS / "ilsvrc_2012_dataset_spec.json")
    sampler, eps = episodes(spec, "test", 3000)
    nodes = [n for n in spec.internal_nodes["test"] if 5 <= len(n.leaves) <= 392]
    assert len(nodes) == len(sampler.nodes) == 15
    expected_ways = Counter(min(50, len(n.leaves)) for n in nodes)
    observed_ways = Counter(e.num_ways for e in eps)
    ways = sorted(expected_ways)
    assert stats.chisquare([observed_ways[w] for w in ways],
                           [expected_ways[w] / len(nodes) * len(eps) for w in ways]).pvalue > P_MIN
    chosen = Counter(c for e in eps for c in e.classes)
    for leaf in spec.classes("test"):
        p = sum(min(1.0, 50 / len(n.leaves)) for n in nodes if leaf in n.leaves) / len(nodes)
        sd = math.sqrt(len(eps) * p * (1 - p)) + 1e-9
        assert abs(chosen[leaf] - len(eps) * p) < 4.5 * sd + 1, leaf


def test_omniglot_alphabet_is_uniform_then_ways_within_it():
    spec = load_spec(SPECS / "omniglot_dataset_spec.json")
    _, eps = episodes(spec, "test", 4000)
    groups = spec.superclasses["test"]
    alphabet = [next(a for a, g in enumerate(groups) if e.classes[0] in g) for e in eps]
    assert uniform_fit(alphabet, 0, len(groups) - 1) > P_MIN
    largest = max(range(len(groups)), key=lambda a: len(groups[a]))
    ways_in_largest = [e.num_ways for e, a in zip(eps, alphabet) if a == largest]
    assert uniform_fit(ways_in_largest, 5, min(50, len(groups[largest]))) > P_MIN


def test_variable_shots_without_hierarchy_on_omniglot():
    spec = load_spec(SPECS / "omniglot_dataset_spec.json")
    _, eps = episodes(spec, "test", 2000, EpisodeConfig(use_bilevel_hierarchy=False))
    assert uniform_fit([e.num_ways for e in eps], 5, 50) > P_MIN
    groups = spec.superclasses["test"]
    spanning = sum(1 for e in eps if not any(set(e.classes) <= set(g) for g in groups))
    assert spanning > 0.9 * len(eps)
