"""Meta-Dataset ``dataset_spec.json`` files: which classes a source has and how they split.

The reference converter writes one of three kinds next to a source's records:

- flat (``DatasetSpecification``): classes are numbered train, then valid, then
  test, ``classes_per_split`` of each;
- two-level (``BiLevelDatasetSpecification``, Omniglot): superclasses are
  numbered train, valid, test; each superclass owns the next
  ``classes_per_superclass`` class ids, in superclass order;
- hierarchical (``HierarchicalDatasetSpecification``, ILSVRC-2012): one WordNet
  subgraph per split; its leaves are the split's classes, whose ids come from
  ``class_names`` (id -> wn_id).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Mapping, Optional

from fewshot_bench.errors import DataError

SPLITS = ("train", "valid", "test")
FLAT = "flat"
BILEVEL = "bilevel"
HIERARCHICAL = "hierarchical"
SPEC_FILE = "dataset_spec.json"


@dataclasses.dataclass(frozen=True)
class Node:
    """One node of a hierarchical split: its WordNet id and the class ids of the leaves it spans."""

    wn_id: str
    leaves: tuple[int, ...]


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    """What the sampler and the reader need to know about one source.

    ``images_per_class`` maps every class id to its image count ``n_c``;
    ``split_classes[split]`` lists the split's class ids in increasing order;
    ``superclasses[split]`` (two-level only) lists the class ids of each of the
    split's superclasses; ``internal_nodes[split]`` (hierarchical only) lists
    every non-leaf node of the split's subgraph with the leaves it spans.
    """

    name: str
    kind: str
    images_per_class: Mapping[int, int]
    class_names: Mapping[int, str]
    split_classes: Mapping[str, tuple[int, ...]]
    file_pattern: str = "{}.tfrecords"
    superclasses: Optional[Mapping[str, tuple[tuple[int, ...], ...]]] = None
    internal_nodes: Optional[Mapping[str, tuple[Node, ...]]] = None
    path: Optional[Path] = None

    def classes(self, split: str) -> tuple[int, ...]:
        return self.split_classes[check_split(split)]

    def relative_class(self, split: str, class_id: int) -> int:
        """The class's index among its split's classes (the ids the reference prints)."""
        return self.classes(split).index(class_id)

    def class_file(self, records_dir: Path, class_id: int) -> Path:
        return Path(records_dir) / self.file_pattern.format(class_id)


def check_split(split: str) -> str:
    """Normalise ``"TEST"``/``"test"`` to ``"test"``; raise on anything else."""
    name = split.lower()
    if name not in SPLITS:
        raise DataError(f"unknown split {split!r}: use one of {', '.join(SPLITS)}")
    return name


def flat_split_classes(classes_per_split: Mapping[str, int]) -> dict[str, tuple[int, ...]]:
    """Flat specs: class ids run 0.., train first, then valid, then test."""
    out, start = {}, 0
    for split in SPLITS:
        count = int(classes_per_split[split.upper()])
        out[split] = tuple(range(start, start + count))
        start += count
    return out


def bilevel_superclasses(superclasses_per_split: Mapping[str, int],
                         classes_per_superclass: Mapping[int, int]) -> dict[str, tuple[tuple[int, ...], ...]]:
    """Two-level specs: superclasses are numbered train, valid, test; each owns the
    next ``classes_per_superclass`` class ids in superclass order."""
    out: dict[str, tuple[tuple[int, ...], ...]] = {}
    superclass, first_class = 0, 0
    for split in SPLITS:
        groups = []
        for _ in range(int(superclasses_per_split[split.upper()])):
            count = int(classes_per_superclass[superclass])
            groups.append(tuple(range(first_class, first_class + count)))
            superclass += 1
            first_class += count
        out[split] = tuple(groups)
    return out


def spanned_leaves(graph: list[dict]) -> dict[str, frozenset[str]]:
    """For every node of a WordNet subgraph, the wn_ids of the leaves below it
    (a leaf spans itself; the graph is a DAG, so a leaf counts once)."""
    children = {node["wn_id"]: list(node["children_ids"]) for node in graph}
    memo: dict[str, frozenset[str]] = {}

    def visit(wn_id: str) -> frozenset[str]:
        if wn_id not in memo:
            kids = children[wn_id]
            memo[wn_id] = frozenset([wn_id]) if not kids else frozenset().union(*(visit(k) for k in kids))
        return memo[wn_id]

    for wn_id in children:
        visit(wn_id)
    return memo


def _int_keys(mapping: Mapping[str, object]) -> dict[int, object]:
    return {int(k): v for k, v in mapping.items()}


def parse_spec(data: Mapping, path: Optional[Path] = None) -> DatasetSpec:
    """Build a :class:`DatasetSpec` from the JSON object of a ``dataset_spec.json``."""
    where = f" in {path}" if path else ""
    kind_name = data.get("__class__", "DatasetSpecification")
    common = dict(name=data["name"], class_names=_int_keys(data.get("class_names", {})),
                  file_pattern=data.get("file_pattern", "{}.tfrecords"), path=path)
    if kind_name == "DatasetSpecification":
        ipc = {k: int(v) for k, v in _int_keys(data["images_per_class"]).items()}
        return DatasetSpec(kind=FLAT, images_per_class=ipc,
                           split_classes=flat_split_classes(data["classes_per_split"]), **common)
    if kind_name == "BiLevelDatasetSpecification":
        ipc = {k: int(v) for k, v in _int_keys(data["images_per_class"]).items()}
        groups = bilevel_superclasses(data["superclasses_per_split"],
                                      {k: int(v) for k, v in _int_keys(data["classes_per_superclass"]).items()})
        split_classes = {s: tuple(c for g in groups[s] for c in g) for s in SPLITS}
        return DatasetSpec(kind=BILEVEL, images_per_class=ipc, split_classes=split_classes,
                           superclasses=groups, **common)
    if kind_name == "HierarchicalDatasetSpecification":
        id_of = {wn: cid for cid, wn in common["class_names"].items()}
        ipc, split_classes, nodes = {}, {}, {}
        for split in SPLITS:
            graph = data["split_subgraphs"][split.upper()]
            counts = data["images_per_class"][split.upper()]
            spans = spanned_leaves(graph)
            leaves = [wn for wn, span in spans.items() if span == frozenset([wn])]
            missing = [wn for wn in leaves if wn not in id_of or wn not in counts]
            if missing:
                raise DataError(f"spec {data['name']!r}{where}: leaves {missing[:5]} of the {split} subgraph "
                                f"have no class id in class_names or no count in images_per_class; "
                                f"regenerate the spec with the reference converter")
            for wn in leaves:
                ipc[id_of[wn]] = int(counts[wn])
            split_classes[split] = tuple(sorted(id_of[wn] for wn in leaves))
            nodes[split] = tuple(Node(wn, tuple(sorted(id_of[leaf] for leaf in span)))
                                 for wn, span in spans.items() if span != frozenset([wn]))
        return DatasetSpec(kind=HIERARCHICAL, images_per_class=ipc, split_classes=split_classes,
                           internal_nodes=nodes, **common)
    raise DataError(f"spec {data.get('name')!r}{where} has unknown __class__ {kind_name!r}: expected "
                    f"DatasetSpecification, BiLevelDatasetSpecification or HierarchicalDatasetSpecification")


def load_spec(path: str | Path) -> DatasetSpec:
    """Read a ``dataset_spec.json`` (or the one inside a source's records directory)."""
    path = Path(path)
    if path.is_dir():
        path = path / SPEC_FILE
    if not path.is_file():
        raise DataError(f"no dataset spec at {path}: convert the source with the reference Meta-Dataset "
                        f"tools, or pass the directory holding its {SPEC_FILE} and <class_id>.tfrecords files")
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise DataError(f"cannot read dataset spec {path}: {e}; restore the file written by the converter") from e
    try:
        return parse_spec(data, path)
    except (KeyError, TypeError, ValueError) as e:
        raise DataError(f"dataset spec {path} is malformed (bad or missing field {e}); "
                        f"restore the file written by the converter") from e
