"""Meta-Dataset spec loading: the three kinds, hand-built and the real reference files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fewshot_bench.datasets.meta_dataset.spec import (BILEVEL, FLAT, HIERARCHICAL, bilevel_superclasses,
                                                      check_split, flat_split_classes, load_spec, spanned_leaves)
from fewshot_bench.errors import DataError

SPECS = Path(__file__).resolve().parents[1].parent / "shared" / "meta_dataset" / "dataset_specs"


def test_flat_split_classes_number_train_then_valid_then_test():
    assert flat_split_classes({"TRAIN": 2, "VALID": 1, "TEST": 3}) == {
        "train": (0, 1), "valid": (2,), "test": (3, 4, 5)}


def test_bilevel_classes_follow_their_superclasses():
    groups = bilevel_superclasses({"TRAIN": 1, "VALID": 1, "TEST": 2}, {0: 2, 1: 3, 2: 1, 3: 2})
    assert groups == {"train": ((0, 1),), "valid": ((2, 3, 4),), "test": ((5,), (6, 7))}


def test_spanned_leaves_counts_a_shared_leaf_once():
    graph = [{"wn_id": "root", "children_ids": ["a", "b"]}, {"wn_id": "a", "children_ids": ["x", "y"]},
             {"wn_id": "b", "children_ids": ["y", "z"]}, {"wn_id": "x", "children_ids": []},
             {"wn_id": "y", "children_ids": []}, {"wn_id": "z", "children_ids": []}]
    spans = spanned_leaves(graph)
    assert spans["root"] == {"x", "y", "z"}
    assert spans["b"] == {"y", "z"}
    assert spans["x"] == {"x"}


def test_check_split_accepts_reference_spelling_and_rejects_others():
    assert check_split("TEST") == "test"
    with pytest.raises(DataError, match="unknown split 'val'"):
        check_split("val")


def test_real_flat_spec():
    spec = load_spec(SPECS / "aircraft_dataset_spec.json")
    assert spec.kind == FLAT and spec.name == "aircraft"
    assert spec.classes("test") == tuple(range(85, 100))
    assert all(spec.images_per_class[c] == 100 for c in range(100))
    assert spec.relative_class("test", 87) == 2


def test_real_bilevel_spec_omniglot():
    spec = load_spec(SPECS / "omniglot_dataset_spec.json")
    assert spec.kind == BILEVEL
    assert [len(spec.superclasses[s]) for s in ("train", "valid", "test")] == [25, 5, 20]
    assert [len(spec.classes(s)) for s in ("train", "valid", "test")] == [883, 81, 659]
    raw = json.loads((SPECS / "omniglot_dataset_spec.json").read_text())
    # The first test alphabet is superclass 30; its characters follow those of superclasses 0..29.
    first = sum(raw["classes_per_superclass"][str(i)] for i in range(30))
    assert spec.superclasses["test"][0] == tuple(range(first, first + raw["classes_per_superclass"]["30"]))
    assert spec.class_names[first].startswith(raw["superclass_names"]["30"])


def test_real_hierarchical_spec_ilsvrc():
    spec = load_spec(SPECS / "ilsvrc_2012_dataset_spec.json")
    assert spec.kind == HIERARCHICAL
    assert [len(spec.classes(s)) for s in ("train", "valid", "test")] == [712, 158, 130]
    assert spec.classes("valid")[0] == 712 and spec.classes("test") == tuple(range(870, 1000))
    leaf_counts = json.loads((SPECS / "ilsvrc_2012_num_leaf_images.json").read_text())
    assert all(spec.images_per_class[c] == leaf_counts[spec.class_names[c]] for c in range(1000))
    roots = [n for n in spec.internal_nodes["test"] if len(n.leaves) == 130]
    assert roots, "the test subgraph's root spans all 130 test classes"
    v2 = load_spec(SPECS / "ilsvrc_2012_v2_dataset_spec.json")
    assert len(v2.classes("train")) == 1000 and v2.classes("test") == ()


def test_records_directory_and_errors(tmp_path):
    with pytest.raises(DataError, match="no dataset spec at .*dataset_spec.json"):
        load_spec(tmp_path)
    (tmp_path / "dataset_spec.json").write_text("{not json")
    with pytest.raises(DataError, match="cannot read dataset spec"):
        load_spec(tmp_path)
    (tmp_path / "dataset_spec.json").write_text(json.dumps({"name": "x", "__class__": "DatasetSpecification"}))
    with pytest.raises(DataError, match="malformed"):
        load_spec(tmp_path)
    (tmp_path / "dataset_spec.json").write_text(json.dumps({"name": "x", "__class__": "Other"}))
    with pytest.raises(DataError, match="unknown __class__ 'Other'"):
        load_spec(tmp_path)
