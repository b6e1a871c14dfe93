"""Conformance kit: does a learner keep the :class:`~fewshot_bench.learners.base.Learner` contract?

:func:`check_learner` builds a learner the way the evaluator does
(``factory(backbone=..., seed=...)``), runs it on tiny Tasks made in memory
(8x8 images of well-separated classes, a tiny frozen backbone) and raises
:class:`ConformanceError` (an ``AssertionError``, so pytest shows it as a
failed test) naming the learner, the check and what is wrong. In a plugin's
tests::

    from fewshot_bench.testing import CHECKS, check_learner

    def test_my_learner_conforms():
        check_learner(MyLearner)          # a class, a factory, or a learner name / import path

    @pytest.mark.parametrize("check", CHECKS)   # or one pytest item per check
    def test_conformance(check):
        check_learner(MyLearner, checks=[check])

The checks:

- ``interface``: the factory builds it; ``fit`` returns something with ``predict``.
  Every check calls ``fit`` as the evaluator does
  (:func:`~fewshot_bench.learners.base.fit_learner`: with ``info=`` the tiny
  task's :class:`~fewshot_bench.tasks.TaskInfo` when ``fit`` takes it).
- ``shapes``: ``predict`` returns finite floating-point logits ``[batch, N]``
  for every query batch (sizes 1 and more) of 2-, 3- and 11-way tasks, with
  and without a validation split, classes of 1 to 3 shots.
- ``labels``: labels 0..N-1 map to logit columns 0..N-1: on well-separated
  classes the accuracy is at least halfway from chance to 100%.
- ``hidden_query_labels``: ``fit`` never sees the query and ``predict`` gets it
  with ``labels=None``; the kit also passes copies carrying the true and wrong
  labels, and the logits must not change (a learner never reads query labels).
- ``determinism``: two learners with one seed give the same logits (to 1e-5);
  fitting another task first changes nothing (the evaluator reuses one learner
  for every task and resumes runs in any order); ``predict`` is repeatable.
- ``side_effects``: ``fit`` leaves the support arrays and the backbone's
  weights as they were (the evaluator shares one backbone across tasks).
- ``bad_support``: an empty support set and a support set holding one class of
  two raise :class:`~fewshot_bench.errors.LearnerError` with a message
  (:func:`fewshot_bench.tasks.check_support` does it).
- ``time``: fit and predict on the 11-way tiny task within ``max_seconds``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import time
from typing import Any, Callable, Iterable, Optional, Sequence

import numpy as np

from fewshot_bench.backbones.base import Backbone
from fewshot_bench.errors import LearnerError
from fewshot_bench.learners.base import fit_learner
from fewshot_bench.registry import parse_spec
from fewshot_bench.tasks import Examples, TaskInfo, ValidationSplit

CHECKS = ("interface", "shapes", "labels", "hidden_query_labels", "determinism", "side_effects", "bad_support",
          "time")
WAYS = (2, 3, 11)
TOLERANCE = 1e-5


class ConformanceError(AssertionError):
    """A learner breaks the Learner contract; the message names the check and the problem."""


def tiny_backbone(image_size: int = 8, seed: int = 0) -> Backbone:
    """A small frozen Keras backbone with fixed weights, for tests.

    Outputs ``"embedding"`` (a linear projection of the pixels to 32 values)
    and two convolutional activations, ``"block1"`` ``[n, s, s, 8]`` and
    ``"block2"`` ``[n, s/2, s/2, 16]``; input values in ``[0, 1]``.
    """
    import keras

    inputs = keras.Input((image_size, image_size, 3))
    block1 = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="block1")(inputs)
    block2 = keras.layers.Conv2D(16, 3, strides=2, padding="same", activation="relu", name="block2")(block1)
    embedding = keras.layers.Dense(32, use_bias=False, name="embedding")(keras.layers.Flatten()(inputs))
    model = keras.Model(inputs, {"embedding": embedding, "block1": block1, "block2": block2},
                        name="conformance_tiny")
    rng = np.random.default_rng(seed)
    model.set_weights([rng.normal(0.0, 1.0 / np.sqrt(np.prod(w.shape[:-1])), w.shape).astype(np.float32)
                       if w.ndim > 1 else np.zeros(w.shape, np.float32) for w in model.get_weights()])
    return Backbone("conformance_tiny", model, image_size, (0.0, 1.0), ("block1", "block2"), f"seed{seed}")


@dataclasses.dataclass(frozen=True)
class TinyTask:
    """A Task in memory: ``query`` keeps its labels for scoring; learners get :meth:`batches`."""

    support: Examples
    query: Examples
    num_classes: int
    validation: Optional[ValidationSplit] = None
    info: TaskInfo = TaskInfo(name="tiny")

    def batches(self, labels: str = "hidden") -> list[Examples]:
        """Query batches of 1, then up to 16 images; ``labels``: hidden, true or wrong (shifted by one)."""
        n = len(self.query)
        starts = [0, 1] + list(range(17, n, 16))
        out = []
        for start, stop in zip(starts, starts[1:] + [n]):
            batch = self.query.take(np.arange(start, stop))
            if labels == "hidden":
                batch = batch.unlabelled()
            elif labels == "wrong":
                batch = Examples(batch.images, (batch.labels + 1) % self.num_classes, batch.ids)
            out.append(batch)
        return [b for b in out if len(b)]

    def describe(self) -> str:
        size = self.support.images.shape[1] if len(self.support) else "?"
        return (f"{self.num_classes}-way tiny task ({len(self.support)} support and {len(self.query)} query "
                f"images of {size}x{size}{', with a validation split' if self.validation else ''})")


def tiny_task(num_classes: int, *, seed: int = 0, image_size: int = 8, queries_per_class: int = 3,
              validation: bool = False, variant: int = 0) -> TinyTask:
    """A ``num_classes``-way task of well-separated classes; a pure function of its arguments.

    Each class is a random colour plus a random pattern; examples add a little
    noise. Classes hold 1, 2 or 3 support examples (2 or 3 with a validation
    split, whose train part holds every class); support and query are shuffled.
    Image ids are opaque hashes (they reveal no label) and unique to the arguments.
    """
    arguments = (seed, num_classes, image_size, queries_per_class, validation, variant)
    rng = np.random.default_rng([seed, num_classes, image_size, queries_per_class, int(validation), variant])
    colours = rng.uniform(size=(num_classes, 1, 1, 3))
    patterns = rng.uniform(size=(num_classes, image_size, image_size, 3))
    prototypes = 0.5 * colours + 0.5 * patterns
    shots = [2 + c % 2 if validation else 1 + c % 3 for c in range(num_classes)]
    support_labels = rng.permutation(np.repeat(np.arange(num_classes), shots))
    query_labels = rng.permutation(np.repeat(np.arange(num_classes), queries_per_class))

    def examples(role: str, labels: np.ndarray) -> Examples:
        noise = rng.normal(0.0, 0.05, size=(len(labels), image_size, image_size, 3))
        images = np.clip(prototypes[labels] + noise, 0.0, 1.0).astype(np.float32)
        ids = tuple("tiny-" + hashlib.sha256(f"{arguments}/{role}/{i}".encode()).hexdigest()[:16]
                    for i in range(len(labels)))
        return Examples(images, labels.astype(np.int64), ids)

    support = examples("support", support_labels)
    split = None
    if validation:  # the last support example of each class goes to val, the others to train
        last = set({int(c): i for i, c in enumerate(support_labels)}.values())
        split = ValidationSplit(support.take([i for i in range(len(support)) if i not in last]),
                                support.take(sorted(last)))
    # the images are made at image_size, never resized: that is their original area
    return TinyTask(support, examples("query", query_labels), num_classes, split,
                    TaskInfo(name="tiny", original_area=float(image_size * image_size)))


@dataclasses.dataclass
class ConformanceReport:
    """What the checks measured: accuracy per number of ways, seconds per check."""

    learner: str
    accuracy: dict[int, float] = dataclasses.field(default_factory=dict)
    seconds: dict[str, float] = dataclasses.field(default_factory=dict)


class _Kit:
    """Runs the checks for one learner factory; every failure names the learner and the check."""

    def __init__(self, factory: Callable[..., Any], name: str, backbone: Backbone, seed: int, max_seconds: float,
                 ways: Sequence[int], report: ConformanceReport):
        self.factory, self.name, self.backbone, self.seed = factory, name, backbone, seed
        self.max_seconds, self.ways, self.report = max_seconds, tuple(ways), report
        self.check = ""

    def fail(self, message: str) -> ConformanceError:
        return ConformanceError(f"learner {self.name} fails the {self.check!r} conformance check: {message}")

    def task(self, num_classes: int, **kwargs: Any) -> TinyTask:
        return tiny_task(num_classes, seed=self.seed, image_size=self.backbone.image_size, **kwargs)

    def learner(self) -> Any:
        try:
            learner = self.factory(backbone=self.backbone, seed=self.seed)
        except Exception as e:  # noqa: BLE001 -- reported with what the kit tried
            raise self.fail(f"building it as factory(backbone=<Backbone>, seed={self.seed}) raised "
                            f"{type(e).__name__}: {e}") from e
        if not callable(getattr(learner, "fit", None)):
            raise self.fail(f"the factory returned a {type(learner).__name__} without a fit method")
        return learner

    def fit(self, learner: Any, task: TinyTask) -> Any:
        try:
            predictor = fit_learner(learner, task)
        except Exception as e:  # noqa: BLE001
            raise self.fail(f"fit raised {type(e).__name__}: {e} on a {task.describe()}") from e
        if not callable(getattr(predictor, "predict", None)):
            raise self.fail(f"fit returned a {type(predictor).__name__} without a predict method")
        return predictor

    def predict(self, predictor: Any, batch: Examples, task: TinyTask) -> np.ndarray:
        try:
            logits = np.asarray(predictor.predict(batch))
        except Exception as e:  # noqa: BLE001
            raise self.fail(f"predict raised {type(e).__name__}: {e} on a batch of {len(batch)} query "
                            f"images of a {task.describe()}") from e
        expected = (len(batch), task.num_classes)
        if logits.shape != expected:
            raise self.fail(f"predict returned logits of shape {logits.shape} for a batch of {len(batch)} query "
                            f"images of a {task.num_classes}-way task; expected {expected} (one row per "
                            f"image, one column per class)")
        if not np.issubdtype(logits.dtype, np.floating):
            raise self.fail(f"predict returned logits of dtype {logits.dtype}; expected floating-point "
                            f"scores, one per class")
        if not np.isfinite(logits).all():
            raise self.fail(f"predict returned NaN or infinite logits on a {task.describe()}")
        return logits

    def predict_all(self, predictor: Any, task: TinyTask, labels: str = "hidden") -> np.ndarray:
        return np.concatenate([self.predict(predictor, b, task) for b in task.batches(labels)])

    def differ(self, a: np.ndarray, b: np.ndarray, what: str, advice: str) -> None:
        if not np.allclose(a, b, rtol=TOLERANCE, atol=TOLERANCE):
            raise self.fail(f"{what} (max |difference| {np.abs(a - b).max():.3g}); {advice}")

    # ---- the checks ----

    def interface(self) -> None:
        self.fit(self.learner(), self.task(2))

    def shapes(self) -> None:
        learner = self.learner()
        for i, ways in enumerate(self.ways):
            task = self.task(ways, validation=i == 1)
            self.predict_all(self.fit(learner, task), task)

    def labels(self) -> None:
        learner = self.learner()
        for i, ways in enumerate(self.ways):
            task = self.task(ways, validation=i == 1)
            predicted = self.predict_all(self.fit(learner, task), task).argmax(axis=1)
            accuracy = float((predicted == task.query.labels).mean())
            self.report.accuracy[ways] = accuracy
            required = (1 + 1 / ways) / 2
            if accuracy < required:
                confusions = ", ".join(f"{c}->{np.bincount(predicted[task.query.labels == c]).argmax()}"
                                       for c in range(ways))
                raise self.fail(f"on a {task.describe()} of well-separated classes, {accuracy:.0%} of the query "
                                f"is predicted right (chance {1 / ways:.0%}, required {required:.0%}). Do labels "
                                f"0..{ways - 1} map to logit columns 0..{ways - 1}? (true class -> most "
                                f"predicted: {confusions})")

    def hidden_query_labels(self) -> None:
        task = self.task(3)
        predictor = self.fit(self.learner(), task)
        hidden = self.predict_all(predictor, task)
        self.differ(hidden, self.predict_all(predictor, task), "predict gave other logits for the same query "
                    "on a second call", "predict must be a pure function of the query images")
        for labels in ("true", "wrong"):
            try:
                shown = np.concatenate([np.asarray(predictor.predict(b)) for b in task.batches(labels)])
            except Exception:  # noqa: BLE001 -- refusing labelled queries is allowed: it is not peeking
                continue
            self.differ(hidden, shown, f"the logits change when the query examples carry {labels} labels: "
                        "predict reads query labels", "a learner must never use query labels (the evaluator "
                        "hides them; use only query.images and query.ids)")

    def determinism(self) -> None:
        task, other = self.task(3), self.task(5, variant=1)
        first = self.predict_all(self.fit(self.learner(), task), task)
        learner = self.learner()
        self.differ(first, self.predict_all(self.fit(learner, task), task),
                    f"two learners built with seed={self.seed} gave different logits on the same "
                    f"{task.describe()}", "draw every random choice from generators seeded by the learner's "
                    "seed (np.random.default_rng(seed), keras/tf initialisers with seed=...)")
        self.fit(learner, other)
        predictor = self.fit(learner, task)
        self.differ(first, self.predict_all(predictor, task), "fitting another task first changed the logits "
                    f"on the same {task.describe()}", "make each fit independent of earlier fits (the "
                    "evaluator reuses one learner for every task, and resumed runs skip finished tasks)")
        self.differ(first, self.predict_all(predictor, task), "predict gave other logits for the same query "
                    "on a second call", "predict must be a pure function of the query images")

    def side_effects(self) -> None:
        task = self.task(3, validation=True)
        images, labels = task.support.images.copy(), task.support.labels.copy()
        weights = [np.array(w) for w in self.backbone.model.get_weights()]
        self.predict_all(self.fit(self.learner(), task), task)
        if not (np.array_equal(images, task.support.images) and np.array_equal(labels, task.support.labels)):
            raise self.fail("fit changed the support images or labels in place; copy them before "
                            "modifying (features are cached by image id)")
        after = self.backbone.model.get_weights()
        if len(after) != len(weights) or any(not np.array_equal(a, b) for a, b in zip(weights, after)):
            raise self.fail("fit changed the backbone's weights in place; fine-tune a copy "
                            "(keras.models.clone_model + set_weights): the evaluator shares one backbone "
                            "across every task")

    def bad_support(self) -> None:
        size = self.backbone.image_size
        empty = TinyTask(Examples(np.zeros((0, size, size, 3), np.float32), np.zeros(0, np.int64), ()),
                         self.task(2).query, 2)
        two_way = self.task(2)
        keep = np.flatnonzero(two_way.support.labels == 0)
        one_class = TinyTask(two_way.support.take(keep), two_way.query, 2)
        for what, task in (("an empty support set", empty), ("a support set holding only class 0 of a "
                                                              "2-way task", one_class)):
            try:
                fit_learner(self.learner(), task)
            except LearnerError as e:
                if not str(e).strip():
                    raise self.fail(f"fit raised LearnerError with an empty message for {what}; say what is "
                                    "wrong") from e
                continue
            except Exception as e:  # noqa: BLE001
                raise self.fail(f"fit raised {type(e).__name__}: {e} for {what}; raise "
                                "fewshot_bench.errors.LearnerError instead (call "
                                "fewshot_bench.tasks.check_support(support, num_classes) first)") from e
            raise self.fail(f"fit accepted {what}; it must raise fewshot_bench.errors.LearnerError (call "
                            "fewshot_bench.tasks.check_support(support, num_classes) first)")

    def time(self) -> None:
        task = self.task(max(self.ways))
        start = time.perf_counter()
        self.predict_all(self.fit(self.learner(), task), task)
        seconds = time.perf_counter() - start
        if seconds > self.max_seconds:
            raise self.fail(f"building, fitting and predicting a {task.describe()} took {seconds:.1f} s; the "
                            f"limit is {self.max_seconds:g} s")


def _resolve(factory: Callable[..., Any] | str) -> tuple[Callable[..., Any], str]:
    if isinstance(factory, str):
        from fewshot_bench.learners import LEARNERS

        LEARNERS.get(parse_spec(factory)[0])  # an unknown name fails here, with the registry's message
        return (lambda **kwargs: LEARNERS.create(factory, **kwargs)), repr(factory)
    return factory, getattr(factory, "__qualname__", None) or type(factory).__name__


def check_learner(factory: Callable[..., Any] | str, *, backbone: Optional[Backbone] = None, seed: int = 0,
                  max_seconds: float = 60.0, checks: Iterable[str] = CHECKS,
                  ways: Sequence[int] = WAYS) -> ConformanceReport:
    """Run ``checks`` (default: all of :data:`CHECKS`) on the learner ``factory`` builds.

    Args:
      factory: a Learner class or any callable taking ``backbone=`` and
        ``seed=``; or a learner name as the command line takes it (registered
        name, ``pkg.mod:Class(arg=1)`` import path, or entry point name).
      backbone: the backbone to build learners with (default :func:`tiny_backbone`);
        tiny tasks are made at its ``image_size``.
      seed: the seed learners are built with, and of the tiny tasks.
      max_seconds: the ``time`` check's limit for the largest tiny task.
      ways: numbers of classes of the tiny tasks (2 or more each); the second
        task has a validation split.

    Raises:
      ConformanceError: on the first broken rule, naming the check and the problem.
    """
    checks = list(checks)
    unknown = [c for c in checks if c not in CHECKS]
    if unknown:
        raise ValueError(f"unknown conformance checks {unknown}; choose among {', '.join(CHECKS)}")
    if not ways or min(ways) < 2:
        raise ValueError(f"ways={tuple(ways)}: tiny tasks need 2 or more classes")
    fn, name = _resolve(factory)
    report = ConformanceReport(name)
    kit = _Kit(fn, name, backbone or tiny_backbone(seed=seed), seed, max_seconds, ways, report)
    for check in checks:
        kit.check = check
        start = time.perf_counter()
        getattr(kit, check)()
        report.seconds[check] = time.perf_counter() - start
    return report
