"""The WordNet DAG of ILSVRC-2012 and its per-split subgraphs (Meta-Dataset's rules, pure functions).

- :func:`sampling_graph`: the leaves plus all their ancestors, edges kept only
  between kept nodes, then every node with a single child collapsed (its child
  attached to its parents) until none is left: no episode can be drawn below a
  node with one child.
- :func:`split_leaves`: valid = the leaves below the valid root, test = those
  below the test root (a leaf below both alternates between them, in sorted
  order, valid first), train = the rest.
- :func:`split_graph`: the sampling graph of one split's leaves over the
  overall graph; for valid and test only ancestors that are the root or below
  it are kept, so the root has no parents.

Graphs are ``{wn_id: frozenset(children wn_ids)}``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Mapping, Optional

from fewshot_bench.errors import DataError

Graph = dict[str, frozenset[str]]


def read_is_a(path: Path) -> dict[str, set[str]]:
    """``wordnet.is_a.txt`` (lines ``<parent wn_id> <child wn_id>``) as parent -> children."""
    children: dict[str, set[str]] = {}
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 2:
            raise DataError(f"{path} line {number}: expected '<parent wn_id> <child wn_id>', got {line!r}")
        children.setdefault(fields[0], set()).add(fields[1])
    return children


def read_words(path: Path) -> dict[str, str]:
    """``words.txt`` (lines ``<wn_id><TAB><words>``) as wn_id -> words."""
    words = {}
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        wn_id, _, text = line.partition("\t")
        if wn_id.strip():
            words[wn_id.strip()] = text.strip()
    return words


def parents_of(children: Mapping[str, Iterable[str]]) -> dict[str, set[str]]:
    parents: dict[str, set[str]] = {}
    for parent, kids in children.items():
        for kid in kids:
            parents.setdefault(kid, set()).add(parent)
    return parents


def _closure(start: Iterable[str], step: Mapping[str, Iterable[str]]) -> set[str]:
    """Every node reachable from ``start`` by one or more steps."""
    seen: set[str] = set()
    frontier = [n for s in start for n in step.get(s, ())]
    while frontier:
        node = frontier.pop()
        if node not in seen:
            seen.add(node)
            frontier.extend(step.get(node, ()))
    return seen


def collapse(children: Mapping[str, Iterable[str]]) -> Graph:
    """Remove every node with exactly one child, attaching the child to the node's parents, until none is left."""
    graph = {n: set(kids) for n, kids in children.items()}
    while True:
        single = sorted(n for n, kids in graph.items() if len(kids) == 1)
        if not single:
            return {n: frozenset(kids) for n, kids in graph.items()}
        for node in single:
            if node not in graph or len(graph[node]) != 1:
                continue
            (child,) = graph.pop(node)
            for kids in graph.values():
                if node in kids:
                    kids.discard(node)
                    kids.add(child)


def sampling_graph(leaves: Iterable[str], children: Mapping[str, Iterable[str]],
                   root: Optional[str] = None) -> Graph:
    """The leaves and their ancestors (below ``root`` or ``root`` itself, if given), isolated and collapsed."""
    leaves = set(leaves)
    nodes = _closure(leaves, parents_of(children))
    if root is not None:
        nodes &= _closure([root], children) | {root}
    nodes |= leaves
    return collapse({n: {k for k in children.get(n, ()) if k in nodes} for n in nodes})


def spanned_leaves(graph: Mapping[str, Iterable[str]]) -> dict[str, frozenset[str]]:
    """For every node, the leaves at or below it."""
    memo: dict[str, frozenset[str]] = {}

    def visit(node: str) -> frozenset[str]:
        if node not in memo:
            kids = graph[node]
            memo[node] = frozenset([node]) if not kids else frozenset().union(*(visit(k) for k in kids))
        return memo[node]

    for node in graph:
        visit(node)
    return memo


def split_leaves(graph: Mapping[str, Iterable[str]], valid_root: str, test_root: str) -> dict[str, set[str]]:
    """Leaves per split: below the valid root, below the test root, and the rest (train)."""
    spans = spanned_leaves(graph)
    for name, root in (("valid", valid_root), ("test", test_root)):
        if root not in spans:
            raise DataError(f"the {name} root {root} is not a node of the WordNet graph of the classes found; "
                            f"the ILSVRC-2012 v1 split needs the 1000 class folders and the full WordNet files")
    valid, test = set(spans[valid_root]), set(spans[test_root])
    for i, leaf in enumerate(sorted(valid & test)):
        (test if i % 2 == 0 else valid).discard(leaf)
    leaves = {n for n, kids in graph.items() if not kids}
    return {"train": leaves - valid - test, "valid": valid, "test": test}


def split_graph(leaves: Iterable[str], graph: Mapping[str, Iterable[str]], root: Optional[str] = None) -> Graph:
    """The subgraph of one split (see the module docstring); empty for no leaves."""
    leaves = set(leaves)
    return sampling_graph(leaves, graph, root) if leaves else {}


def graph_nodes(graph: Mapping[str, Iterable[str]], words: Mapping[str, str]) -> list[dict]:
    """The reference JSON of a subgraph: nodes sorted by wn_id, with sorted children and parents."""
    parents = parents_of(graph)
    return [{"wn_id": n, "words": words.get(n, ""), "children_ids": sorted(graph[n]),
             "parents_ids": sorted(parents.get(n, ()))} for n in sorted(graph)]
