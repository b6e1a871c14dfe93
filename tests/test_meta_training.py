"""Meta-training: episodes from a train split, checkpoints, resume equal to an uninterrupted run, export."""

import argparse
import json

import numpy as np
import pytest

from fewshot_bench.backbones import BACKBONES
from fewshot_bench.datasets.meta_dataset.writer import write_synthetic_source
from fewshot_bench.errors import ConfigError, DataError
from fewshot_bench.learners import LEARNERS
from fewshot_bench.learners.meta_training import (TrainConfig, meta_train, spec_without_image_size,
                                                  training_episode, training_sources)

COUNTS = {c: 8 for c in range(8)}  # classes 0-4 train, 5 valid, 6-7 test


@pytest.fixture(scope="module")
def records(tmp_path_factory):
    root = tmp_path_factory.mktemp("md_train")
    write_synthetic_source(root / "toy", "toy", {"train": 5, "valid": 1, "test": 2}, COUNTS, image_size=16)
    return root


def config(records, steps, learner="protonet", **overrides):
    settings = dict(learner=learner, backbone="conv4", image_size=16, records_root=str(records), sources=("toy",),
                    steps=steps, seed=0, learning_rate=1e-2, checkpoint_every=1, ways=3, shots=2, queries=2)
    settings.update(overrides)
    return TrainConfig(**settings)


def run(records, out, steps, learner="protonet", **overrides):
    backbone = BACKBONES.create("conv4", image_size=16, seed=7)
    state = meta_train(LEARNERS.create(learner, backbone=backbone, seed=0), config(records, steps, learner,
                                                                                  **overrides),
                       out, print_fn=lambda line: None)
    return backbone, state


def test_training_episodes_come_from_the_train_split_and_depend_on_the_step(records):
    episode = training_episode(config(records, 5))
    first, again, other = episode(0), episode(0), episode(1)
    assert first.support.ids == again.support.ids and first.support.ids != other.support.ids
    classes = {int(i.split("/")[1]) for t in (first, other) for i in t.support.ids}
    assert classes <= set(range(5)) and first.num_classes == 3 and len(first.support) == 6


@pytest.mark.parametrize("learner", ["protonet", "protomaml(num_steps=2)"])
def test_resume_from_a_checkpoint_equals_an_uninterrupted_run(records, tmp_path, learner):
    straight, _ = run(records, tmp_path / "straight", 5, learner, checkpoint_every=3)
    run(records, tmp_path / "resumed", 3, learner, checkpoint_every=3)
    resumed, state = run(records, tmp_path / "resumed", 5, learner, checkpoint_every=3)  # restored from step 3
    assert state["steps_done"] == 5
    for a, b in zip(straight.model.get_weights(), resumed.model.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    lines = (tmp_path / "resumed" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines] == [1, 2, 3, 4, 5]
    assert state["train_seconds"] > 0


def test_trained_backbone_loads_by_name(records, tmp_path):
    trained, _ = run(records, tmp_path / "run", 2)
    info = json.loads((tmp_path / "run" / "backbone.json").read_text())
    assert info == {"backbone": "conv4", "image_size": 16, "step": 2}
    loaded = BACKBONES.create(f"meta_trained(path='{tmp_path / 'run'}')")
    assert loaded.name == "conv4" and loaded.image_size == 16
    for a, b in zip(trained.model.get_weights(), loaded.model.get_weights()):
        np.testing.assert_array_equal(a, b)
    random = BACKBONES.create("conv4", image_size=16, seed=7)
    assert loaded.weights_id != random.weights_id
    with pytest.raises(DataError, match="fewshot-bench train"):
        BACKBONES.create(f"meta_trained(path='{tmp_path / 'nothing'}')")


def test_resume_with_other_options_is_refused(records, tmp_path):
    run(records, tmp_path / "run", 1)
    with pytest.raises(ConfigError, match="learning_rate: 0.01 -> 0.1"):
        run(records, tmp_path / "run", 2, learning_rate=0.1)


def test_spec_without_image_size():
    assert spec_without_image_size("conv4(image_size=28, seed=1)") == "conv4(seed=1)"
    assert spec_without_image_size("resnet18(image_size=84)") == "resnet18"


def test_training_sources_and_bad_options(records):
    assert training_sources("md-v2", "/r") == ("/r", ("ilsvrc_2012_v2",))
    with pytest.raises(ConfigError, match="--records_root"):
        training_sources("md-v2")
    with pytest.raises(ConfigError, match="--ways, --shots and --queries together"):
        training_episode(config(records, 2, shots=None))
    with pytest.raises(DataError, match="no dataset_spec.json for source 'absent'"):
        training_episode(config(records, 2, sources=("absent",)))
    with pytest.raises(ConfigError, match="does not meta-train"):
        meta_train(LEARNERS.create("head2toe", backbone=BACKBONES.create("conv4", image_size=16)),
                   config(records, 1, "head2toe"), records / "never")


def test_train_command(records, tmp_path, capsys):
    from fewshot_bench.learners.train_command import add_commands

    parser = argparse.ArgumentParser()
    add_commands(parser.add_subparsers())
    args = parser.parse_args(["train", "--learner", "protonet", "--backbone", "conv4", "--image_size", "16",
                              "--suite", "custom", "--records_root", str(records), "--sources", "toy", "--steps", "2",
                              "--ways", "3", "--shots", "1", "--queries", "2", "--out", str(tmp_path / "cli")])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "trained 2 steps of protonet on toy" in out and "meta_trained(path=" in out
    assert (tmp_path / "cli" / "backbone.weights.h5").is_file()
