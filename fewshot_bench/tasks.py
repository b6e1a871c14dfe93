"""Tasks: the one thing every learner sees.

A VTAB task and a Meta-Dataset episode are both a :class:`Task`: a labelled
support set, a stream of query batches and some metadata. A learner sees the
metadata only through :class:`TaskInfo` (the task's name and original image
area), and only if its ``fit`` asks for it (see ``fewshot_bench.learners.base``).

Images in a Task are ``float32`` arrays of shape ``[n, size, size, 3]`` with
values in ``[0, 1]``; a backbone maps them into its own value range.
"""

from __future__ import annotations

import dataclasses
import hashlib
from typing import Callable, Iterable, Iterator, Optional, Sequence

import numpy as np

from fewshot_bench.errors import ConfigError, LearnerError


@dataclasses.dataclass(frozen=True)
class Examples:
    """A batch of images with stable ids and (unless hidden) integer labels."""

    images: np.ndarray
    labels: Optional[np.ndarray]
    ids: tuple[str, ...]

    def __post_init__(self):
        n = len(self.images)
        if len(self.ids) != n or (self.labels is not None and len(self.labels) != n):
            raise ValueError(f"Examples: {n} images, {len(self.ids)} ids and "
                             f"{None if self.labels is None else len(self.labels)} labels must agree")

    def __len__(self) -> int:
        return len(self.ids)

    def take(self, indices: Sequence[int] | np.ndarray) -> "Examples":
        idx = np.asarray(indices, dtype=np.int64)
        return Examples(self.images[idx], None if self.labels is None else self.labels[idx],
                        tuple(self.ids[i] for i in idx))

    def unlabelled(self) -> "Examples":
        """The same images with the labels hidden (what a predictor receives)."""
        return Examples(self.images, None, self.ids)

    @staticmethod
    def concat(parts: Sequence["Examples"]) -> "Examples":
        labels = None if any(p.labels is None for p in parts) else np.concatenate([p.labels for p in parts])
        return Examples(np.concatenate([p.images for p in parts]), labels,
                        tuple(i for p in parts for i in p.ids))


@dataclasses.dataclass(frozen=True)
class ValidationSplit:
    """A train -> validation split inside the support set (VTAB: train800 -> val200).

    Learners choose hyper-parameters by fitting on ``train`` and scoring on
    ``val``, then refit on the whole support set. Both are views of the support
    set, so the test split cannot reach hyper-parameter selection.
    """

    train: Examples
    val: Examples


class QueryStream:
    """A re-iterable stream of query batches (each iteration starts afresh)."""

    def __init__(self, make_batches: Callable[[], Iterator[Examples]], size: Optional[int] = None):
        self._make_batches = make_batches
        self.size = size

    def __iter__(self) -> Iterator[Examples]:
        return iter(self._make_batches())

    @classmethod
    def from_examples(cls, examples: Examples, batch_size: int = 500) -> "QueryStream":
        def batches():
            for start in range(0, len(examples), batch_size):
                yield examples.take(np.arange(start, min(start + batch_size, len(examples))))
        return cls(batches, size=len(examples))


@dataclasses.dataclass(frozen=True)
class TaskInfo:
    """What a learner may know about a Task beyond its images.

    ``name``: the VTAB task name (``"dsprites(predicted_attribute='label_orientation', num_classes=16)"``,
    ``"mini_dsprites_orientation"``) or the MD source name (``"omniglot"``).
    ``benchmark``: ``"vtab"``, ``"md"`` or ``""`` (unknown).
    ``original_area``: median height x width, in pixels, of the task's support
    images before they were resized to the evaluator's image size; ``None`` if unknown.
    """

    name: str
    benchmark: str = ""
    original_area: Optional[float] = None


def median_area(heights_widths: np.ndarray) -> Optional[float]:
    """Median of height x width over the rows ``[h, w]`` of ``heights_widths`` (``None`` when empty).

    The "typical image area" of a task, as BiT-HyperRule reads it (images below
    96x96 pixels get the small resolution).
    """
    sizes = np.asarray(heights_widths, dtype=np.float64).reshape(-1, 2)
    return float(np.median(sizes[:, 0] * sizes[:, 1])) if len(sizes) else None


@dataclasses.dataclass(frozen=True)
class Task:
    """One adaptation problem: fit on ``support``, predict ``query``.

    ``task_id`` is unique within its source (a VTAB task name, or the episode
    index of an MD source). ``info`` defaults to ``TaskInfo(name=source)``.
    """

    support: Examples
    query: QueryStream
    num_classes: int
    suite: str
    group: str
    source: str
    task_id: str
    seed: int
    validation: Optional[ValidationSplit] = None
    info: Optional[TaskInfo] = None  # None -> TaskInfo(name=source), set in __post_init__

    def __post_init__(self):
        if self.info is None:
            object.__setattr__(self, "info", TaskInfo(name=self.source))

    @property
    def key(self) -> str:
        return f"{self.suite}/{self.source}/{self.task_id}"


def check_support(support: Examples, num_classes: int) -> None:
    """Raise :class:`LearnerError` unless every class 0..num_classes-1 has an example."""
    if support.labels is None or len(support) == 0:
        raise LearnerError("the support set is empty or unlabelled: a learner needs labelled examples")
    labels = np.asarray(support.labels)
    if labels.min() < 0 or labels.max() >= num_classes:
        raise LearnerError(f"support labels must lie in 0..{num_classes - 1}, found {labels.min()}..{labels.max()}")
    missing = sorted(set(range(num_classes)) - set(labels.tolist()))
    if missing:
        raise LearnerError(f"classes {missing[:10]} of {num_classes} have no support example")


class Fingerprint:
    """Incremental hash of the image ids and labels a Task holds.

    Two Tasks with the same fingerprint contain the same images with the same
    labels in the same roles (support vs. query), in the same order.
    """

    def __init__(self):
        self._hash = hashlib.sha256()

    def update(self, role: str, examples: Examples) -> None:
        labels = examples.labels if examples.labels is not None else [-1] * len(examples)
        for image_id, label in zip(examples.ids, labels):
            self._hash.update(f"{role}\t{image_id}\t{int(label)}\n".encode())

    def hexdigest(self) -> str:
        return self._hash.hexdigest()[:16]


def fingerprint(support: Examples, query: Iterable[Examples]) -> str:
    """The fingerprint of a support set and its query batches."""
    fp = Fingerprint()
    fp.update("support", support)
    for batch in query:
        fp.update("query", batch)
    return fp.hexdigest()


# Scoring rules of a TaskSource (see fewshot_bench.evaluation.scores).
POOLED = "pooled"      # VTAB: accuracy pooled over all query examples of the one task
EPISODES = "episodes"  # MD: mean of per-episode accuracies with a 95% interval


@dataclasses.dataclass(frozen=True)
class TaskSource:
    """One VTAB task or one MD source: a named, indexed family of Tasks.

    ``build(index, seed, image_size)`` returns Task ``index`` (0..num_tasks-1)
    and must be a pure function of its arguments, so tasks can be built in
    any order, in any process.
    """

    name: str
    group: str
    scoring: str
    num_tasks: int
    build: Callable[[int, int, int], Task]
    benchmark: str = "vtab"  # "vtab" or "md": which half of VTAB+MD it belongs to

    def task_id(self, index: int) -> str:
        """The id of task ``index``: the task's name for VTAB, the episode index for MD."""
        return self.name if self.scoring == POOLED else str(index)


@dataclasses.dataclass(frozen=True)
class Suite:
    """An ordered set of task sources; each source carries its scoring rule."""

    name: str
    sources: tuple[TaskSource, ...]
    description: str = ""

    def source(self, name: str) -> TaskSource:
        for s in self.sources:
            if s.name == name:
                return s
        raise ConfigError(f"suite {self.name!r} has no source {name!r}; it has {[s.name for s in self.sources]}")

    def task(self, source: TaskSource, index: int, seed: int, image_size: int) -> Task:
        return dataclasses.replace(source.build(index, seed, image_size), suite=self.name)

    @property
    def num_tasks(self) -> int:
        return sum(s.num_tasks for s in self.sources)
