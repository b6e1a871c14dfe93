"""The Meta-Dataset episode sampler (Triantafillou et al. 2020, Sec. 3.2; Dumoulin et al. 2021).

The protocol's rules are small pure functions of the random draws they need
(``beta``, the log-weights ...), so each can be checked against hand-computed
cases; :class:`EpisodeSampler` draws those values from a generator seeded by
(source, split, seed, episode index), which makes an episode a pure function
of these four values.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
from typing import Optional, Sequence

import numpy as np

from fewshot_bench.datasets.meta_dataset.spec import BILEVEL, HIERARCHICAL, DatasetSpec, Node, check_split
from fewshot_bench.errors import ConfigError, DataError

# Rule: ILSVRC episodes come from internal DAG nodes spanning at most this many leaves.
MAX_SPANNING_LEAVES_ELIGIBLE = 392


@dataclasses.dataclass(frozen=True)
class EpisodeConfig:
    """The sampler's settings; the defaults are the protocol's.

    Setting ``num_ways`` / ``num_support`` / ``num_query`` fixes that quantity
    (e.g. 5-way 1-shot with 15 queries: ``EpisodeConfig.fixed(5, 1, 15)``).
    ``use_dag_hierarchy`` / ``use_bilevel_hierarchy`` switch off the ImageNet DAG
    and the Omniglot alphabets (classes are then drawn from the whole split).
    """

    min_ways: int = 5
    max_ways_upper_bound: int = 50
    max_num_query: int = 10
    max_support_set_size: int = 500
    max_support_size_contrib_per_class: int = 100
    min_log_weight: float = math.log(0.5)
    max_log_weight: float = math.log(2.0)
    min_examples_in_class: int = 0
    num_ways: Optional[int] = None
    num_support: Optional[int] = None
    num_query: Optional[int] = None
    use_dag_hierarchy: bool = True
    use_bilevel_hierarchy: bool = True
    max_spanning_leaves: int = MAX_SPANNING_LEAVES_ELIGIBLE

    @classmethod
    def fixed(cls, ways: int, shots: int, query: int = 15, **overrides) -> "EpisodeConfig":
        """Fixed way/shot episodes (e.g. 5-way 1-shot, 15 queries per class), hierarchies off."""
        settings = dict(num_ways=ways, num_support=shots, num_query=query,
                        use_dag_hierarchy=False, use_bilevel_hierarchy=False)
        settings.update(overrides)
        return cls(**settings)


@dataclasses.dataclass(frozen=True)
class EpisodeDescription:
    """One episode: class ids (absolute, in label order), per-class support and
    query counts, and the record indices (within each class file) of each role."""

    classes: tuple[int, ...]
    shots: tuple[int, ...]
    query: tuple[int, ...]
    support_records: tuple[tuple[int, ...], ...]
    query_records: tuple[tuple[int, ...], ...]

    @property
    def num_ways(self) -> int:
        return len(self.classes)


# ----------------------------------------------------------------------------
# The protocol's rules (pure functions).

def num_ways_range(num_classes: int, min_ways: int, max_ways_upper_bound: int) -> tuple[int, int]:
    """Rule: ways ~ uniform on [min_ways, min(max_ways_upper_bound, C)] (bounds inclusive)."""
    high = min(max_ways_upper_bound, num_classes)
    if high < min_ways:
        raise ConfigError(f"{num_classes} classes are available but episodes need at least {min_ways} ways; "
                          f"lower min_ways or use a split with more classes")
    return min_ways, high


def compute_num_query(images_per_class: Sequence[int], max_num_query: int,
                      num_support: Optional[int] = None) -> int:
    """Rule: q = min(max_num_query, min_c floor(n_c / 2)), the same for every class.

    With a fixed number of shots k, q = min(max_num_query, min_c n_c - k) instead.
    """
    n = np.asarray(images_per_class, dtype=np.int64)
    if num_support is None:
        if n.min() < 2:
            raise DataError(f"a class has {n.min()} image(s): episodes need at least 2 images per class "
                            f"(one support, one query); set min_examples_in_class=2 to skip such classes")
        return int(min(max_num_query, (n // 2).min()))
    if n.min() - num_support < 1:
        raise ConfigError(f"a class has {n.min()} images: {num_support}-shot episodes need at least "
                          f"{num_support + 1} per class; set min_examples_in_class={num_support + 1} "
                          f"or lower num_support")
    return int(min(max_num_query, (n - num_support).min()))


def support_set_size(beta: float, num_remaining_per_class: Sequence[int],
                     max_support_size_contrib_per_class: int, max_support_set_size: int) -> int:
    """Rule: S = min(max_support_set_size, sum_c floor(beta * min(100, n_c - q) + 1)), beta ~ U(0, 1)."""
    remaining = np.asarray(num_remaining_per_class, dtype=np.int64)
    if max_support_set_size < len(remaining):
        raise ConfigError(f"max_support_set_size={max_support_set_size} is smaller than the {len(remaining)} "
                          f"ways: raise it or lower max_ways_upper_bound")
    contributions = np.minimum(max_support_size_contrib_per_class, remaining)
    return int(min(np.floor(beta * contributions + 1).sum(), max_support_set_size))


def shots_per_class(images_per_class: Sequence[int], num_remaining_per_class: Sequence[int],
                    support_size: int, log_weights: Sequence[float]) -> np.ndarray:
    """Rule: k_c = min(floor(p_c * (S - N)) + 1, n_c - q), p_c proportional to n_c * exp(u_c).

    ``log_weights`` are the u_c ~ U(log 0.5, log 2); ``images_per_class`` are the
    classes' total counts n_c and ``num_remaining_per_class`` the n_c - q.
    """
    n = np.asarray(images_per_class, dtype=np.float64)
    remaining = np.asarray(num_remaining_per_class, dtype=np.int64)
    if support_size < len(n):
        raise ConfigError(f"a support set of {support_size} cannot hold one image of each of {len(n)} ways")
    if remaining.min() < 1:
        raise DataError("a class has no image left for its support set after the query set was drawn")
    weights = n * np.exp(np.asarray(log_weights, dtype=np.float64))
    proportions = weights / weights.sum()
    desired = np.floor(proportions * (support_size - len(n))).astype(np.int64) + 1
    return np.minimum(desired, remaining)


def eligible_nodes(nodes: Sequence[Node], min_ways: int, max_spanning_leaves: int) -> list[Node]:
    """Rule (ILSVRC): episodes start at internal nodes spanning between min_ways and 392 leaves."""
    return [node for node in nodes if min_ways <= len(node.leaves) <= max_spanning_leaves]


def episode_seed(source: str, split: str, seed: int, index: int) -> int:
    """The generator seed of episode ``index``: a hash of (source, split, seed, index)."""
    key = f"{source}\x1f{check_split(split)}\x1f{int(seed)}\x1f{int(index)}".encode()
    return int.from_bytes(hashlib.sha256(key).digest()[:16], "little")


def episode_rng(source: str, split: str, seed: int, index: int) -> np.random.Generator:
    return np.random.default_rng(episode_seed(source, split, seed, index))


# ----------------------------------------------------------------------------
# The sampler.

class EpisodeSampler:
    """Samples episode descriptions of one split of one source.

    Settings that can never produce an episode (too few classes, classes too
    small for fixed shots) raise at construction, naming the source and classes.
    """

    def __init__(self, spec: DatasetSpec, split: str, config: Optional[EpisodeConfig] = None,
                 source: Optional[str] = None):
        self.spec = spec
        self.source = source or spec.name
        self.split = check_split(split)
        self.config = config or EpisodeConfig()
        cfg = self.config
        n_of = spec.images_per_class
        keep = [c for c in spec.classes(self.split) if n_of[c] >= cfg.min_examples_in_class]
        self.classes: tuple[int, ...] = tuple(keep)
        self.mode = "flat"
        if spec.kind == HIERARCHICAL and cfg.use_dag_hierarchy:
            self.mode = HIERARCHICAL
        elif spec.kind == BILEVEL and cfg.use_bilevel_hierarchy:
            self.mode = BILEVEL
        if self.mode != "flat" and cfg.num_ways is not None:
            switch = "use_dag_hierarchy" if self.mode == HIERARCHICAL else "use_bilevel_hierarchy"
            raise ConfigError(f"source {spec.name!r}: num_ways={cfg.num_ways} fixes the ways, but {switch}=True "
                              f"lets the hierarchy choose them; set {switch}=False (EpisodeConfig.fixed does)")
        kept = set(keep)
        if self.mode == HIERARCHICAL:
            pruned = [Node(n.wn_id, tuple(c for c in n.leaves if c in kept)) for n in spec.internal_nodes[self.split]]
            self.nodes = eligible_nodes(pruned, cfg.min_ways, cfg.max_spanning_leaves)
            if not self.nodes:
                raise ConfigError(f"source {spec.name!r}, split {self.split}: no node of the class hierarchy spans "
                                  f"between {cfg.min_ways} and {cfg.max_spanning_leaves} classes; "
                                  f"set use_dag_hierarchy=False")
        elif self.mode == BILEVEL:
            groups = [tuple(c for c in g if c in kept) for g in spec.superclasses[self.split]]
            self.groups = [g for g in groups if len(g) >= cfg.min_ways]
            if not self.groups:
                raise ConfigError(f"source {spec.name!r}, split {self.split}: no superclass has {cfg.min_ways} "
                                  f"classes; lower min_ways or set use_bilevel_hierarchy=False")
        else:
            ways = cfg.num_ways if cfg.num_ways is not None else cfg.min_ways
            if len(self.classes) < ways:
                raise ConfigError(f"source {spec.name!r}, split {self.split} has {len(self.classes)} usable classes "
                                  f"(of {len(spec.classes(self.split))}, min_examples_in_class="
                                  f"{cfg.min_examples_in_class}); {ways}-way episodes need more: use another "
                                  f"split or fewer ways")
        self._check_class_sizes()

    def _check_class_sizes(self) -> None:
        cfg = self.config
        if cfg.num_support is not None or cfg.num_query is not None:
            need = (cfg.num_support if cfg.num_support is not None else 1) + \
                   (cfg.num_query if cfg.num_query is not None else 1)
        else:
            need = 2
        small = [c for c in self.classes if self.spec.images_per_class[c] < need]
        if small:
            shown = ", ".join(f"{c} ({self.spec.images_per_class[c]} images)" for c in small[:5])
            raise ConfigError(f"source {self.spec.name!r}, split {self.split}: classes {shown}"
                              f"{' ...' if len(small) > 5 else ''} have fewer than the {need} images an episode "
                              f"needs per class; set min_examples_in_class={need} to skip them, "
                              f"or lower num_support/num_query")

    def sample_classes(self, rng: np.random.Generator) -> tuple[int, ...]:
        """Classes of one episode, in label order."""
        cfg = self.config
        if self.mode == HIERARCHICAL:
            node = self.nodes[rng.integers(len(self.nodes))]
            ways = min(len(node.leaves), cfg.max_ways_upper_bound)
            return tuple(int(c) for c in rng.choice(node.leaves, ways, replace=False))
        pool = self.classes
        if self.mode == BILEVEL:
            pool = self.groups[rng.integers(len(self.groups))]
        if cfg.num_ways is not None:
            ways = cfg.num_ways
        else:
            low, high = num_ways_range(len(pool), cfg.min_ways, cfg.max_ways_upper_bound)
            ways = int(rng.integers(low, high + 1))
        return tuple(int(c) for c in rng.choice(pool, ways, replace=False))

    def sample(self, rng: np.random.Generator) -> EpisodeDescription:
        cfg = self.config
        classes = self.sample_classes(rng)
        n = np.array([self.spec.images_per_class[c] for c in classes], dtype=np.int64)
        if cfg.num_query is not None:
            q = cfg.num_query
        else:
            q = compute_num_query(n, cfg.max_num_query, cfg.num_support)
        remaining = n - q
        if cfg.num_support is not None:
            shots = np.full(len(classes), cfg.num_support, dtype=np.int64)
        else:
            size = support_set_size(rng.uniform(), remaining, cfg.max_support_size_contrib_per_class,
                                    cfg.max_support_set_size)
            log_weights = rng.uniform(cfg.min_log_weight, cfg.max_log_weight, size=len(classes))
            shots = shots_per_class(n, remaining, size, log_weights)
        support, query = [], []
        for n_c, k_c in zip(n, shots):
            # Each class's images are shuffled before they are drawn: a uniform ordered sample.
            picked = rng.choice(int(n_c), int(k_c) + q, replace=False)
            support.append(tuple(int(i) for i in picked[:k_c]))
            query.append(tuple(int(i) for i in picked[k_c:]))
        return EpisodeDescription(classes, tuple(int(k) for k in shots), (q,) * len(classes),
                                  tuple(support), tuple(query))

    def episode(self, seed: int, index: int) -> EpisodeDescription:
        """Episode ``index`` for ``seed``: a pure function of (source, split, seed, index)."""
        return self.sample(episode_rng(self.source, self.split, seed, index))
