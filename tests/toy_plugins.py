"""A toy suite, learner and backbone reachable by import path (for CLI and worker tests).

Images encode their class in the first pixel; the learner reads it back, so
every score is known in advance. Options make chosen tasks slow, crash the
process, or fail.
"""

from __future__ import annotations

import os
import time
import zlib

import numpy as np

from fewshot_bench.learners.base import Learner, Predictor
from fewshot_bench.tasks import EPISODES, POOLED, Examples, QueryStream, Suite, Task, TaskSource


def _examples(n: int, num_classes: int, prefix: str, seed: int) -> Examples:
    labels = np.random.default_rng(seed).permutation(np.arange(n) % num_classes)
    images = np.zeros((n, 2, 2, 3), np.float32) + (labels / 10)[:, None, None, None]
    return Examples(images, labels, tuple(f"{prefix}{i}" for i in range(n)))


def _source(name: str, num_classes: int, scoring: str, num_tasks: int, group: str) -> TaskSource:
    def build(index: int, seed: int, image_size: int) -> Task:
        key = zlib.crc32(f"{name}/{index}/{seed}".encode())
        return Task(_examples(num_classes * 2, num_classes, f"{name}/s{index}/", key),
                    QueryStream.from_examples(_examples(12, num_classes, f"{name}/q{index}/", key + 1), 5),
                    num_classes, "toy", group, name, str(index), seed)
    return TaskSource(name, group, scoring, num_tasks, build, "md" if scoring == EPISODES else "vtab")


def toy_suite(data_dir=None, records_root=None, episodes=None) -> Suite:
    return Suite("toy", (_source("three", 3, POOLED, 1, "natural"),
                         _source("four", 4, POOLED, 1, "structured"),
                         _source("episodic", 5, EPISODES, episodes or 6, "md")))


class _Predictor(Predictor):
    def __init__(self, num_classes: int, noise: float, seed: int):
        self.num_classes, self.noise, self.rng = num_classes, noise, np.random.default_rng(seed)

    def predict(self, query: Examples) -> np.ndarray:
        cls = np.rint(query.images[:, 0, 0, 0] * 10).astype(int)
        flip = self.rng.random(len(cls)) < self.noise
        cls[flip] = (cls[flip] + 1) % self.num_classes
        return np.eye(self.num_classes)[cls]


class ToyLearner(Learner):
    """Reads the class off the first pixel; ``noise`` flips that share of answers (seeded per task)."""

    def __init__(self, backbone=None, seed: int = 0, noise: float = 0.2, sleep: float = 0.0,
                 hang_on: int = -1, crash_on: int = -1, fail_on: int = -1):
        super().__init__(backbone, seed)
        self.noise, self.sleep = noise, sleep
        self.hang_on, self.crash_on, self.fail_on = hang_on, crash_on, fail_on

    def fit(self, support, num_classes, validation=None):
        first = support.ids[0]
        time.sleep(self.sleep)
        if num_classes == self.hang_on:
            time.sleep(3600)
        if num_classes == self.crash_on:
            os._exit(9)
        if num_classes == self.fail_on:
            raise RuntimeError(f"refusing {num_classes} classes")
        return _Predictor(num_classes, self.noise, zlib.crc32(f"{first}/{self.seed}".encode()))


def toy_backbone(image_size: int = 2):
    import keras

    from fewshot_bench.backbones.base import Backbone

    inputs = keras.Input((image_size, image_size, 3))
    model = keras.Model(inputs, {"embedding": keras.layers.Flatten()(inputs)})
    return Backbone("toy", model, image_size, (0.0, 1.0), (), "none")
