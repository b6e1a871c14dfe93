"""Meta-training: a backbone trained on Meta-Dataset training episodes, with checkpoints and resume.

:func:`meta_train` runs ``learner.meta_train_step(task, optimizer)`` (ProtoNet,
fo-Proto-MAML) on training episodes (:func:`training_episode`: episode ``step``
of a source drawn by ``(seed, step)``, so a run is a pure function of its
configuration, however often it is interrupted). Every ``checkpoint_every``
steps it writes, in the output directory:

- ``checkpoints/``: a ``tf.train.Checkpoint`` of the model (batch-norm
  statistics included), the optimizer and the step; a rerun with the same
  options resumes from the latest one;
- ``backbone.weights.h5`` and ``backbone.json``: the trained weights and the
  backbone they belong to, which the evaluator loads with
  ``--backbone "meta_trained(path='DIR')"`` (registered here);
- ``train_config.json`` (refused on resume if the options changed),
  ``metrics.jsonl`` (loss and accuracy per step) and ``state.json``
  (steps done, training seconds).

MD-v2 trains on ``ilsvrc_2012_v2``'s train split; the ``mini`` suite's
MD-style sources offer their own train split offline (:func:`training_sources`).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np

from fewshot_bench.backbones.base import BACKBONES, Backbone
from fewshot_bench.errors import ConfigError, DataError
from fewshot_bench.tasks import Task

log = logging.getLogger(__name__)

CONFIG_FILE, STATE_FILE, METRICS_FILE = "train_config.json", "state.json", "metrics.jsonl"
WEIGHTS_FILE, BACKBONE_FILE = "backbone.weights.h5", "backbone.json"
TRAIN_SOURCES = {"md-v2": ("ilsvrc_2012_v2",),
                 "md-v1": ("ilsvrc_2012", "omniglot", "aircraft", "cu_birds", "dtd", "quickdraw", "fungi",
                           "vgg_flower")}


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """What defines a meta-training run (``steps`` may grow on resume; nothing else may change)."""

    learner: str
    backbone: str
    image_size: int
    records_root: str
    sources: tuple[str, ...]
    steps: int
    seed: int = 0
    learning_rate: float = 1e-3
    split: str = "train"
    checkpoint_every: int = 100
    ways: Optional[int] = None
    shots: Optional[int] = None
    queries: Optional[int] = None
    config: str = ""  # gin bindings in effect

    def identity(self) -> dict[str, Any]:
        """The fields a resumed run must share with the run it continues."""
        return {k: v for k, v in dataclasses.asdict(self).items() if k not in ("steps", "checkpoint_every")}


def training_sources(suite: str, records_root: Optional[str] = None,
                     sources: Optional[Sequence[str]] = None) -> tuple[str, tuple[str, ...]]:
    """(records root, training sources) of a suite: ``mini`` (offline), ``md-v2`` or ``md-v1``."""
    if suite == "mini":
        from data_prep.mini import MD_SOURCES, default_mini_root, ensure_mini

        root = str(ensure_mini(default_mini_root(), seed=0) / "md") if records_root is None else records_root
        return root, tuple(sources or MD_SOURCES)
    if suite not in TRAIN_SOURCES and not sources:
        raise ConfigError(f"train: unknown suite {suite!r}; use mini, md-v2 or md-v1, or name --sources")
    if not records_root:
        raise ConfigError(f"train --suite {suite}: pass --records_root, the Meta-Dataset records root holding "
                          f"one folder per source ({', '.join(sources or TRAIN_SOURCES[suite])})")
    return records_root, tuple(sources or TRAIN_SOURCES[suite])


def episode_config(ways: Optional[int], shots: Optional[int], queries: Optional[int]):
    """The protocol's variable-way variable-shot episodes, or fixed ones when all three are given."""
    from fewshot_bench.datasets.meta_dataset import EpisodeConfig

    given = [v is not None for v in (ways, shots, queries)]
    if any(given) and not all(given):
        raise ConfigError("train: give --ways, --shots and --queries together (fixed episodes) or none of them")
    return EpisodeConfig.fixed(ways, shots, queries) if all(given) else EpisodeConfig()


def training_episode(config: TrainConfig) -> Callable[[int], Task]:
    """``step -> Task``: episode ``step`` of a source drawn uniformly by ``(seed, step)``."""
    from fewshot_bench.datasets.meta_dataset import md_source

    episodes = episode_config(config.ways, config.shots, config.queries)
    sources = [md_source(config.records_root, name, split=config.split, num_episodes=config.steps,
                         suite="meta-train", group="train", episode_config=episodes) for name in config.sources]
    for name in config.sources:
        if not (Path(config.records_root) / name / "dataset_spec.json").is_file():
            raise DataError(f"train: no dataset_spec.json for source {name!r} under {config.records_root}; "
                            f"convert it first (python -m data_prep.md_convert) or fix --records_root")

    def episode(step: int) -> Task:
        choice = int(np.random.default_rng([config.seed, step]).integers(len(sources)))
        return sources[choice].build(step, config.seed, config.image_size)

    return episode


def _write_json(path: Path, data: Any) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True))
    os.replace(tmp, path)


def _check_resume(out: Path, config: TrainConfig) -> None:
    path = out / CONFIG_FILE
    if not path.exists():
        return
    before = json.loads(path.read_text())
    previous = {k: v for k, v in before.items() if k not in ("steps", "checkpoint_every")}
    now = json.loads(json.dumps(config.identity()))
    changed = sorted(k for k in set(previous) | set(now) if previous.get(k) != now.get(k))
    if changed:
        detail = ", ".join(f"{k}: {previous.get(k)!r} -> {now.get(k)!r}" for k in changed)
        raise ConfigError(f"train: {out} holds a run with other options ({detail}); resume it with the same "
                          f"options or choose a new --out directory")


def spec_without_image_size(spec: str) -> str:
    """``"conv4(image_size=28, seed=1)"`` -> ``"conv4(seed=1)"`` (the size is stored on its own)."""
    from fewshot_bench.registry import parse_spec

    name, kwargs = parse_spec(spec)
    kwargs.pop("image_size", None)
    return f"{name}({', '.join(f'{k}={v!r}' for k, v in kwargs.items())})" if kwargs else name


def export_backbone(backbone: Backbone, spec: str, out: Path, step: int) -> Path:
    """Write ``backbone.weights.h5`` (atomically) and ``backbone.json`` describing it."""
    weights = out / WEIGHTS_FILE
    tmp = out / "backbone.partial.weights.h5"
    backbone.model.save_weights(str(tmp))
    os.replace(tmp, weights)
    _write_json(out / BACKBONE_FILE, {"backbone": spec_without_image_size(spec), "image_size": backbone.image_size,
                                      "step": step})
    return weights


def meta_train(learner: Any, config: TrainConfig, out: str | Path, log_every: int = 10,
               print_fn: Callable[[str], None] = print) -> dict[str, Any]:
    """Meta-train ``learner``'s backbone to ``config.steps`` steps, resuming from ``out`` if it holds a run.

    Returns the final state: steps done, training seconds (this and earlier sessions), last metrics.
    """
    import keras
    import tensorflow as tf

    if not callable(getattr(learner, "meta_train_step", None)):
        raise ConfigError(f"train: learner {config.learner!r} does not meta-train; use protonet or protomaml")
    if config.steps < 1 or config.checkpoint_every < 1:
        raise ConfigError(f"train: steps ({config.steps}) and checkpoint_every ({config.checkpoint_every}) "
                          f"must be positive")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    _check_resume(out, config)
    episode = training_episode(config)

    variables = learner.trainable_variables()
    optimizer = keras.optimizers.Adam(config.learning_rate)
    optimizer.build(variables)
    step = tf.Variable(0, dtype=tf.int64, trainable=False)
    checkpoint = tf.train.Checkpoint(model=learner.backbone.model, optimizer=optimizer, step=step)
    manager = tf.train.CheckpointManager(checkpoint, str(out / "checkpoints"), max_to_keep=3)
    state = {"steps_done": 0, "train_seconds": 0.0}
    if manager.latest_checkpoint:
        checkpoint.restore(manager.latest_checkpoint).assert_existing_objects_matched()
        if (out / STATE_FILE).exists():
            state = json.loads((out / STATE_FILE).read_text())
        print_fn(f"resuming {out} from step {int(step.numpy())} ({manager.latest_checkpoint})")
    _write_json(out / CONFIG_FILE, dataclasses.asdict(config))

    recent: list[dict[str, float]] = []
    session_start, seconds_before = time.perf_counter(), float(state.get("train_seconds", 0.0))
    with open(out / METRICS_FILE, "a") as metrics_log:
        while int(step.numpy()) < config.steps:
            index = int(step.numpy())
            metrics = learner.meta_train_step(episode(index), optimizer)
            step.assign_add(1)
            done = int(step.numpy())
            recent.append(metrics)
            metrics_log.write(json.dumps({"step": done, **metrics}) + "\n")
            if done % log_every == 0 or done == config.steps:
                loss = np.mean([m["loss"] for m in recent])
                accuracy = np.mean([m["accuracy"] for m in recent])
                print_fn(f"step {done}/{config.steps}  loss {loss:.4f}  episode accuracy {accuracy:.3f}")
                recent = []
            if done % config.checkpoint_every == 0 or done == config.steps:
                metrics_log.flush()
                manager.save(checkpoint_number=done)
                export_backbone(learner.backbone, config.backbone, out, done)
                state = {"steps_done": done,
                         "train_seconds": seconds_before + time.perf_counter() - session_start,
                         "last": metrics}
                _write_json(out / STATE_FILE, state)
    if not (out / WEIGHTS_FILE).exists():  # resumed a finished run: still export
        export_backbone(learner.backbone, config.backbone, out, int(step.numpy()))
    return state


@BACKBONES.register("meta_trained")
def meta_trained(path: str, image_size: Optional[int] = None) -> Backbone:
    """A backbone meta-trained by ``fewshot-bench train --out PATH``: ``meta_trained(path='PATH')``.

    Registered here, beside the code that writes it; ``fewshot_bench.backbones``
    names this module with ``BACKBONES.add_builtin_module``, so ``meta_trained``
    is listed and resolved whatever was imported first.
    """
    from fewshot_bench.backbones.weights import path_digest, weights_id

    folder = Path(os.path.expanduser(path))
    described, weights = folder / BACKBONE_FILE, folder / WEIGHTS_FILE
    if not (described.is_file() and weights.is_file()):
        raise DataError(f"meta_trained: {folder} holds no {BACKBONE_FILE} and {WEIGHTS_FILE}; "
                        f"run `fewshot-bench train --out {folder} ...` first")
    info = json.loads(described.read_text())
    trained_size = int(info["image_size"])
    if image_size is not None and image_size != trained_size:
        log.warning("meta_trained: %s was trained at %d px; building it at %d px", folder, trained_size, image_size)
    backbone = BACKBONES.create(info["backbone"], image_size=image_size or trained_size)
    try:
        backbone.model.load_weights(str(weights))
    except Exception as error:  # noqa: BLE001 -- any Keras loading failure names the file
        raise DataError(f"meta_trained: cannot load {weights} into {info['backbone']!r}: {error}") from error
    return dataclasses.replace(backbone, weights_id=weights_id(path_digest(weights)))
