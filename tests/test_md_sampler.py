"""The MD sampling rules against hand-computed cases, and invariants over thousands of episodes."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from fewshot_bench.datasets.meta_dataset.sampler import (EpisodeConfig, EpisodeSampler, compute_num_query,
                                                         eligible_nodes, episode_seed, num_ways_range,
                                                         shots_per_class, support_set_size)
from fewshot_bench.datasets.meta_dataset.spec import BILEVEL, HIERARCHICAL, Node, load_spec, parse_spec
from fewshot_bench.errors import ConfigError, DataError

SPECS = Path(__file__).resolve().parents[1].parent / "shared" / "meta_dataset" / "dataset_specs"


def flat_spec(test_counts, train_counts=()):
    counts = list(train_counts) + list(test_counts)
    return parse_spec({"name": "toy", "__class__": "DatasetSpecification",
                       "classes_per_split": {"TRAIN": len(train_counts), "VALID": 0, "TEST": len(test_counts)},
                       "images_per_class": {str(i): n for i, n in enumerate(counts)}})


# --- rules, hand-computed ----------------------------------------------------

def test_defaults_are_the_protocol():
    c = EpisodeConfig()
    assert (c.min_ways, c.max_ways_upper_bound, c.max_num_query, c.max_support_set_size,
            c.max_support_size_contrib_per_class, c.min_examples_in_class) == (5, 50, 10, 500, 100, 0)
    assert c.min_log_weight == pytest.approx(math.log(0.5)) and c.max_log_weight == pytest.approx(math.log(2))


def test_num_ways_range():
    assert num_ways_range(30, 5, 50) == (5, 30)
    assert num_ways_range(712, 5, 50) == (5, 50)
    with pytest.raises(ConfigError, match="4 classes .* at least 5 ways"):
        num_ways_range(4, 5, 50)


def test_num_query_is_half_the_smallest_class_capped_at_ten():
    assert compute_num_query([20, 7, 30], 10) == 3      # floor(7 / 2)
    assert compute_num_query([100, 100], 10) == 10
    assert compute_num_query([21, 40], 10) == 10
    with pytest.raises(DataError, match="at least 2 images per class"):
        compute_num_query([1, 50], 10)


def test_num_query_with_fixed_shots():
    assert compute_num_query([20, 8], 10, num_support=5) == 3   # 8 - 5
    assert compute_num_query([40, 60], 10, num_support=5) == 10
    with pytest.raises(ConfigError, match="at least 6 per class"):
        compute_num_query([5, 60], 10, num_support=5)


def test_support_set_size():
    # beta = 0.5, n_c - q = (90, 150, 3): floor(45 + 1) + floor(50 + 1) + floor(1.5 + 1) = 46 + 51 + 2
    assert support_set_size(0.5, [90, 150, 3], 100, 500) == 99
    assert support_set_size(0.99, [200] * 10, 100, 500) == 500    # 10 * 100 capped at 500
    assert support_set_size(0.0, [7, 9, 11], 100, 500) == 3        # one image per class
    with pytest.raises(ConfigError, match="smaller than the 3 ways"):
        support_set_size(0.5, [7, 9, 11], 100, 2)


def test_shots_per_class():
    # equal log-weights: p = (10, 30) / 40; S - N = 10 -> floor(2.5) + 1, floor(7.5) + 1
    assert shots_per_class([10, 30], [5, 25], 12, [0.0, 0.0]).tolist() == [3, 8]
    # p = (10 * 2, 10 * 0.5) / 25 = (0.8, 0.2); S - N = 21 -> floor(16.8) + 1 = 17 capped at 12, floor(4.2) + 1
    assert shots_per_class([10, 10], [12, 30], 23, [math.log(2), math.log(0.5)]).tolist() == [12, 5]
    with pytest.raises(ConfigError, match="cannot hold one image of each of 2 ways"):
        shots_per_class([10, 10], [5, 5], 1, [0.0, 0.0])


def test_eligible_nodes_span_between_min_ways_and_392_leaves():
    nodes = [Node(str(k), tuple(range(k))) for k in (4, 5, 392, 393)]
    assert [n.wn_id for n in eligible_nodes(nodes, 5, 392)] == ["5", "392"]


def test_episode_seed_depends_on_every_part():
    base = episode_seed("dtd", "test", 0, 3)
    assert base == episode_seed("dtd", "TEST", 0, 3)
    others = {episode_seed("dtd", "test", 0, 4), episode_seed("dtd", "test", 1, 3),
              episode_seed("dtd", "valid", 0, 3), episode_seed("aircraft", "test", 0, 3)}
    assert base not in others and len(others) == 4


# --- fixed way/shot mode and errors --------------------------------------------

def test_fixed_five_way_five_shot():
    spec = flat_spec([30] * 8)
    sampler = EpisodeSampler(spec, "test", EpisodeConfig.fixed(5, 5, 15))
    for i in range(50):
        e = sampler.episode(0, i)
        assert e.num_ways == 5 and e.shots == (5,) * 5 and e.query == (15,) * 5


def test_fixed_mode_errors_name_the_problem():
    with pytest.raises(ConfigError, match=r"classes 2 \(19 images\) have fewer than the 20 .*min_examples_in_class=20"):
        EpisodeSampler(flat_spec([30, 30, 19, 30, 30, 30]), "test", EpisodeConfig.fixed(5, 5, 15))
    with pytest.raises(ConfigError, match="has 4 usable classes .* 5-way"):
        EpisodeSampler(flat_spec([30] * 4), "test", EpisodeConfig.fixed(5, 1, 15))
    # skipping the small class leaves 5 classes: allowed
    ok = EpisodeSampler(flat_spec([30, 30, 19, 30, 30, 30]), "test",
                        EpisodeConfig.fixed(5, 5, 15, min_examples_in_class=20))
    assert 2 not in ok.episode(0, 0).classes
    omniglot = load_spec(SPECS / "omniglot_dataset_spec.json")
    with pytest.raises(ConfigError, match="set use_bilevel_hierarchy=False"):
        EpisodeSampler(omniglot, "test", EpisodeConfig(num_ways=5))


def test_class_with_one_image_is_an_error():
    with pytest.raises(ConfigError, match=r"classes 1 \(1 images\)"):
        EpisodeSampler(flat_spec([10, 1, 10, 10, 10, 10]), "test")


# --- invariants over thousands of episodes from the reference specs ------------

def check_episode(sampler: EpisodeSampler, e) -> None:
    spec, cfg = sampler.spec, sampler.config
    split_classes = set(spec.classes(sampler.split))
    n = np.array([spec.images_per_class[c] for c in e.classes])
    assert len(set(e.classes)) == e.num_ways and set(e.classes) <= split_classes
    assert cfg.min_ways <= e.num_ways <= min(cfg.max_ways_upper_bound, len(split_classes))
    q = min(cfg.max_num_query, int((n // 2).min()))
    assert e.query == (q,) * e.num_ways
    shots = np.array(e.shots)
    assert (shots >= 1).all() and (shots <= n - q).all()
    assert shots.sum() <= cfg.max_support_set_size
    for c, k, support, query, n_c in zip(e.classes, e.shots, e.support_records, e.query_records, n):
        assert len(support) == k and len(query) == q
        records = support + query
        assert len(set(records)) == len(records), f"image repeated in class {c}"
        assert all(0 <= r < n_c for r in records)


@pytest.mark.parametrize("name,split", [("aircraft", "test"), ("cu_birds", "test"), ("dtd", "test"),
                                        ("fungi", "test"), ("mscoco", "test"), ("quickdraw", "test"),
                                        ("traffic_sign", "test"), ("vgg_flower", "test"),
                                        ("omniglot", "test"), ("omniglot", "train"),
                                        ("ilsvrc_2012", "test"), ("ilsvrc_2012", "train"),
                                        ("ilsvrc_2012_v2", "train")])
def test_invariants_on_reference_specs(name, split):
    spec = load_spec(SPECS / f"{name}_dataset_spec.json")
    sampler = EpisodeSampler(spec, split)
    ways = []
    for i in range(1000):
        e = sampler.episode(7, i)
        check_episode(sampler, e)
        ways.append(e.num_ways)
        if spec.kind == BILEVEL:
            assert any(set(e.classes) <= set(g) for g in spec.superclasses[split]), "classes span two alphabets"
        if spec.kind == HIERARCHICAL:
            assert any(set(e.classes) <= set(node.leaves) for node in sampler.nodes), "classes not under one node"
    if spec.kind == HIERARCHICAL:
        spans = [len(node.leaves) for node in sampler.nodes]
        assert (min(ways), max(ways)) == (min(spans), min(50, max(spans)))
    elif spec.kind == BILEVEL:
        assert min(ways) == 5 and max(ways) <= max(len(g) for g in spec.superclasses[split])
    else:
        assert (min(ways), max(ways)) == (5, min(50, len(spec.classes(split))))


def test_within_class_shuffle():
    """Records are drawn from a shuffled class: every record is used, positions average (n - 1) / 2."""
    spec = load_spec(SPECS / "aircraft_dataset_spec.json")
    sampler = EpisodeSampler(spec, "test")
    firsts, used = [], set()
    for i in range(2000):
        e = sampler.episode(0, i)
        for support, query in zip(e.support_records, e.query_records):
            firsts.append(support[0])
            used.update(support + query)
    assert used == set(range(100))
    assert abs(np.mean(firsts) - 49.5) < 2.0
    assert np.mean(np.array(firsts) == 0) < 0.03


def test_episode_is_a_pure_function_of_seed_and_index():
    spec = load_spec(SPECS / "omniglot_dataset_spec.json")
    a, b = EpisodeSampler(spec, "test"), EpisodeSampler(spec, "test")
    forward = [a.episode(3, i) for i in range(20)]
    backward = [b.episode(3, i) for i in reversed(range(20))][::-1]
    assert forward == backward
    assert forward[0] != a.episode(4, 0)
