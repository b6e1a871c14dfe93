"""Tasks: the one thing every learner sees.

A VTAB task and a Meta-Dataset episode are both a :class:`Task`: a labelled
support set, a stream of query batches and some metadata. A learner sees the
metadata only through :class:`TaskInfo` (the task's name and original image
area), and only if its ``fit`` asks for it (see ``fewshot_bench.learners.base``).

Images in a Task are ``float32`` arrays of shape ``[n, size, size, 3]`` with
values in ``[0, 1]``; a backbone maps them into its own value range. Examples
may be lazy (Meta-Dataset episodes are): their images are decoded only when a
learner reads them, so a learner served from a feature cache decodes none.
"""

from __future__ import annotations

import dataclasses
import hashlib
import threading
from typing import Callable, Iterable, Iterator, Optional, Sequence

import numpy as np

from fewshot_bench.errors import ConfigError, LearnerError


Loader = Callable[[np.ndarray], np.ndarray]
"""Decodes chosen examples of a lazy :class:`Examples`: indices ``[k]`` -> float32 images ``[k, h, w, c]``."""


class _Pixels:
    """The images behind an :class:`Examples`: given, or decoded by ``load`` on demand.

    ``whole()`` decodes every image once (one thread decodes, others wait) and
    keeps the array; ``at(indices)`` decodes only those (or slices the kept array).
    """

    def __init__(self, count: int, shape: tuple[int, ...], load: Optional[Loader] = None,
                 whole: Optional[np.ndarray] = None):
        self.count, self.shape, self._load, self._whole = count, shape, load, whole
        self._lock = threading.Lock()

    def __getstate__(self) -> dict:  # a lock does not pickle (a lazy loader must, to pickle lazy Examples)
        return {k: v for k, v in self.__dict__.items() if k != "_lock"}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state, _lock=threading.Lock())

    @property
    def decoded(self) -> bool:
        return self._whole is not None

    def at(self, indices: np.ndarray) -> np.ndarray:
        if self._whole is not None:
            return self._whole[indices]
        if len(indices) == 0:  # the loader is never asked for nothing
            return np.zeros((0, *self.shape), np.float32)
        images = np.asarray(self._load(indices), dtype=np.float32)
        if images.shape != (len(indices), *self.shape):
            raise ValueError(f"Examples.lazy: load returned images of shape {images.shape} for {len(indices)} "
                             f"indices, expected {(len(indices), *self.shape)}")
        return images

    def whole(self) -> np.ndarray:
        with self._lock:
            if self._whole is None:
                self._whole = self.at(np.arange(self.count, dtype=np.int64))
        return self._whole


@dataclasses.dataclass(frozen=True, init=False, eq=False)
class Examples:
    """A batch of images with stable ids and (unless hidden) integer labels.

    Eager, ``Examples(images, labels, ids)``: the images are given. Lazy,
    ``Examples.lazy(ids, labels, image_shape, load)``: ``load(indices)``
    decodes the images asked for, when asked. Either way ``images`` is every
    image (a lazy Examples decodes them on first access and keeps them),
    ``images_at(indices)`` only some; ``len``, ``ids``, ``labels``,
    ``image_shape``, ``take`` and ``unlabelled`` decode nothing. Built by its
    constructors only (not ``dataclasses.replace``); lazy Examples pickle only
    if their loader does (read ``images`` first to send them to another process).
    """

    labels: Optional[np.ndarray]
    ids: tuple[str, ...]
    image_shape: tuple[int, ...]  # (height, width, channels) of every image
    _pixels: _Pixels = dataclasses.field(repr=False)

    def __init__(self, images: np.ndarray, labels: Optional[np.ndarray], ids: tuple[str, ...]):
        self._set(labels, ids, _Pixels(len(images), tuple(int(s) for s in np.shape(images)[1:]), whole=images))

    @classmethod
    def lazy(cls, ids: tuple[str, ...], labels: Optional[np.ndarray], image_shape: Sequence[int],
             load: Loader) -> "Examples":
        """Examples whose images ``load`` decodes only when they are asked for."""
        return cls._of(labels, tuple(ids), _Pixels(len(ids), tuple(int(s) for s in image_shape), load=load))

    @classmethod
    def _of(cls, labels: Optional[np.ndarray], ids: tuple[str, ...], pixels: _Pixels) -> "Examples":
        examples = cls.__new__(cls)
        examples._set(labels, ids, pixels)
        return examples

    def _set(self, labels: Optional[np.ndarray], ids: tuple[str, ...], pixels: _Pixels) -> None:
        n = pixels.count
        if len(ids) != n or (labels is not None and len(labels) != n):
            raise ValueError(f"Examples: {n} images, {len(ids)} ids and "
                             f"{None if labels is None else len(labels)} labels must agree")
        for name, value in (("labels", labels), ("ids", ids), ("image_shape", pixels.shape), ("_pixels", pixels)):
            object.__setattr__(self, name, value)

    @property
    def images(self) -> np.ndarray:
        """Every image, ``[n, h, w, c]`` (a lazy Examples decodes them all now, once)."""
        return self._pixels.whole()

    @property
    def decoded(self) -> bool:
        """Whether ``images`` is in memory (always, unless lazy and not yet asked for)."""
        return self._pixels.decoded

    def images_at(self, indices: Sequence[int] | np.ndarray) -> np.ndarray:
        """The images at ``indices`` only, ``[len(indices), h, w, c]``; the others are not decoded."""
        return self._pixels.at(np.asarray(indices, dtype=np.int64))

    def __len__(self) -> int:
        return len(self.ids)

    def take(self, indices: Sequence[int] | np.ndarray) -> "Examples":
        """The examples at ``indices``, in that order (lazy while this one is not decoded)."""
        idx = np.asarray(indices, dtype=np.int64)
        labels = None if self.labels is None else self.labels[idx]
        ids = tuple(self.ids[i] for i in idx)
        if self.decoded:
            return Examples(self.images[idx], labels, ids)
        return Examples.lazy(ids, labels, self.image_shape, lambda chosen: self.images_at(idx[chosen]))

    def unlabelled(self) -> "Examples":
        """The same images with the labels hidden (what a predictor receives); they share any decode."""
        return Examples._of(None, self.ids, self._pixels)

    @staticmethod
    def concat(parts: Sequence["Examples"]) -> "Examples":
        """The parts one after the other (their images decoded)."""
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
