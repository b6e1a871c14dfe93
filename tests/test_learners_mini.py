"""Every built-in learner is far above chance on `mini` tasks, through the evaluator's own path.

The tasks are the real `mini` data (built here from scratch), read at 32 px and embedded by
EfficientNet-Lite0 with its ImageNet weights: the VTAB-style ``mini_digits`` (1000 support
examples, 10 classes) and two MD-style ``mini_photos`` episodes (variable way and shot). The
fine-tuning learners run short schedules of their own code (the small presets, shortened again).

"Far above chance": accuracy above ``min(3 x chance, halfway from chance to 100%)``. The
dSprites-style tasks are left out on purpose: see the mini tables in the README, where the
frozen-embedding learners (ProtoNet, Proto-MAML) reach only 2-2.5x chance on them, as published
ProtoNets do on VTAB's structured tasks.
"""

from __future__ import annotations

import pytest

from fewshot_bench.learners import LEARNERS

SETTINGS = {
    "linear_probe": "linear_probe",
    "protonet": "protonet",
    "head2toe": "head2toe(target_sizes=(256,), keep_fractions=(0.2,), penalties=(1e-3,), "
                "default_target_size=256, lasso_steps=50, head_steps=100)",
    "finetune": "finetune(learning_rates=(0.003,), steps=(60,), batch_size=32, default_lr=0.003, "
                "default_steps=60, train_batch_norm=False)",
    "bit": "bit(batch_size=32, schedule_scale=0.12, base_lr=0.05, max_crop=32, train_batch_norm=False)",
    "protomaml": "protomaml(num_steps=5, learning_rate=2e-6, batch_norm='moving', inner_batch_size=128)",
}
IMAGE_SIZE = 32
TASKS = (("mini_digits", 0), ("mini_photos", 0), ("mini_photos", 1))


def test_every_built_in_learner_is_covered():
    built_in = {name for name in LEARNERS.names() if LEARNERS.origin(name).startswith("built-in")}
    assert built_in == set(SETTINGS)


@pytest.fixture(scope="module")
def mini_tasks(tmp_path_factory):
    from fewshot_bench.datasets.mini import mini_suite

    suite = mini_suite(tmp_path_factory.mktemp("home") / "mini", episodes=2)
    sources = {source.name: source for source in suite.sources}
    return [sources[name].build(index, 0, IMAGE_SIZE) for name, index in TASKS]


@pytest.fixture(scope="module")
def backbone():
    from fewshot_bench.backbones.base import BACKBONES

    return BACKBONES.create("efficientnet_lite0", image_size=IMAGE_SIZE)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(SETTINGS))
def test_learner_far_above_chance_on_mini(name, mini_tasks, backbone):
    from fewshot_bench.evaluation.evaluator import run_task

    learner = LEARNERS.create(SETTINGS[name], backbone=backbone, seed=0)
    for task in mini_tasks:
        outcome = run_task(learner, task)
        chance = 1.0 / task.num_classes
        accuracy = outcome.correct / outcome.total
        assert accuracy > min(3 * chance, (1 + chance) / 2), (name, task.key, task.num_classes, accuracy)
