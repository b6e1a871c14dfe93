"""The Learner interface that every transfer learner and meta-learner implements.

``Learner.fit(support, num_classes, validation=None)`` adapts to one Task and
returns a :class:`Predictor`; ``Predictor.predict(query)`` returns logits of
shape ``[len(query), num_classes]``. The query :class:`Examples` a predictor
receives carry images and ids but no labels.

Task metadata is opt-in: a learner that declares a keyword ``info`` (or
``**kwargs``) in ``fit``, e.g. ``fit(self, support, num_classes,
validation=None, info: Optional[TaskInfo] = None)``, also gets the Task's
:class:`~fewshot_bench.tasks.TaskInfo` (its name and the area of its images
before resizing). Learners whose ``fit`` has no such keyword are called as
before. Every caller that holds a Task (the evaluator, the conformance kit)
goes through :func:`fit_learner`, which makes that choice. ``info`` is
``None`` when ``fit`` is called directly, outside the evaluator.

A learner is built by the registry as ``factory(backbone=..., seed=..., **kwargs)``
and its constructor arguments are gin-configurable.
"""

from __future__ import annotations

import abc
import inspect
from typing import Any, Callable, Iterable, Optional

import numpy as np

from fewshot_bench.backbones.base import Backbone
from fewshot_bench.errors import LearnerError
from fewshot_bench.registry import Registry
from fewshot_bench.tasks import Examples, Task, ValidationSplit


class Predictor(abc.ABC):
    """A fitted model for one Task."""

    @abc.abstractmethod
    def predict(self, query: Examples) -> np.ndarray:
        """Logits ``[len(query), num_classes]`` for unlabelled query examples."""


class Learner(abc.ABC):
    """Adapts to a Task's support set. Subclasses implement :meth:`fit`."""

    def __init__(self, backbone: Optional[Backbone] = None, seed: int = 0):
        self.backbone = backbone
        self.seed = seed

    @abc.abstractmethod
    def fit(self, support: Examples, num_classes: int,
            validation: Optional[ValidationSplit] = None) -> Predictor:
        """Adapt to ``support`` (labels 0..num_classes-1).

        ``validation``, when given, is a train -> val split inside ``support``
        for hyper-parameter selection; the final model is refit on all of
        ``support``. A subclass may add a keyword ``info: Optional[TaskInfo] = None``
        to receive the Task's metadata (see :func:`fit_learner`).
        """

    def meta_train(self, tasks: Iterable[Task]) -> None:  # optional
        """Train on a stream of training Tasks (meta-learners override this)."""
        raise LearnerError(f"{type(self).__name__} does not meta-train: use a learner that implements meta_train")


def accepts_info(fit: Callable[..., Any]) -> bool:
    """Whether ``fit`` takes an ``info`` keyword (named, or through ``**kwargs``).

    The opt-in rule of the learner interface: only such learners get
    :class:`~fewshot_bench.tasks.TaskInfo`; a callable whose signature cannot
    be read does not.
    """
    try:
        parameters = inspect.signature(fit).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.kind is p.VAR_KEYWORD or (p.name == "info" and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY))
               for p in parameters)


def fit_learner(learner: Learner, task: Task) -> Predictor:
    """``learner.fit`` on ``task``, passing ``info=task.info`` only if ``fit`` accepts it.

    ``task``: a :class:`Task`, or anything with ``support``, ``num_classes``,
    ``validation`` and ``info`` (the conformance kit's tiny tasks).
    """
    if accepts_info(learner.fit):
        return learner.fit(task.support, task.num_classes, task.validation, info=task.info)
    return learner.fit(task.support, task.num_classes, task.validation)


LEARNERS: Registry[Learner] = Registry("learner", "fewshot_bench.learners", required_methods=("fit",))
