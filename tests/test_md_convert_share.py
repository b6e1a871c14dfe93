"""Fixed episodes for sharing: a converted source's episodes dumped (ids or pixels), read back and checked."""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from data_prep.episodes_share import add_commands, read_shared, share_episodes
from data_prep.md_convert import convert_source
from fewshot_bench.datasets.meta_dataset import md_source
from fewshot_bench.errors import ConfigError
from fewshot_bench.tasks import fingerprint

TEXTURES = ["banded", "blotchy", "braided", "bubbly", "bumpy", "chequered"]


def convert_lab(tmp_path: Path, name: str, shade: int) -> Path:
    """One lab's conversion of a 6-class DTD tree (all classes in test); ``shade`` changes the pixels."""
    raw = tmp_path / f"raw_{name}"
    for k, texture in enumerate(TEXTURES):
        for i in range(6):
            path = raw / "images" / texture / f"{texture}_{i:04d}.jpg"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.full((8, 8, 3), (40 * k, 30 * i, shade), np.uint8)).save(path, quality=90)
    split = tmp_path / f"split_{name}.json"
    split.write_text(json.dumps({"train": [], "valid": [], "test": TEXTURES}))
    convert_source("dtd", raw, tmp_path / name, splits=split, workers=1, progress=False)
    return tmp_path / name


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser()
    add_commands(p.add_subparsers(dest="command", required=True))
    return p


def test_a_manifest_replays_on_another_labs_records_and_detects_different_images(tmp_path, capsys):
    lab_a = convert_lab(tmp_path, "a", shade=100)
    manifest = share_episodes(lab_a, "dtd", tmp_path / "episodes.jsonl", num=3, seed=4)
    assert (tmp_path / "episodes.digests.json").is_file()
    episodes = read_shared(manifest, lab_a, image_size=8)
    original = md_source(lab_a, "dtd")
    for position, e in enumerate(episodes):
        task = original.build(position, 4, 8)
        assert e["index"] == position and e["ways"] == task.num_classes >= 5
        assert e["support"] == len(task.support) and e["fingerprint_ok"] and e["content_ok"]
    same = convert_lab(tmp_path, "same", shade=100)     # a second conversion of the same raw data
    assert read_shared(manifest, same, image_size=8) == episodes
    other = convert_lab(tmp_path, "other", shade=101)   # same ids, other pixels
    assert all(e["fingerprint_ok"] and e["content_ok"] is False for e in read_shared(manifest, other, image_size=8))
    args = parser().parse_args(["read-episodes", str(manifest), "--records", str(other), "--image_size", "8"])
    assert args.func(args) == 1
    assert "3 of 3 episodes differ from the shared ones: [0, 1, 2]" in capsys.readouterr().out
    with pytest.raises(ConfigError, match="pass --records ROOT"):
        read_shared(manifest)


def test_a_full_dump_is_read_back_without_the_records(tmp_path, capsys):
    lab_a = convert_lab(tmp_path, "a", shade=100)
    args = parser().parse_args(["dump-episodes", "--records", str(lab_a), "--source", "dtd", "--out",
                                str(tmp_path / "dump"), "--num", "2", "--start", "5", "--seed", "1", "--pixels"])
    assert args.func(args) == 0
    tasks = [md_source(lab_a, "dtd").build(index, 1, 8) for index in (5, 6)]
    queries = [list(t.query) for t in tasks]  # read before the records go
    expected = [(fingerprint(t.support, q), sum(len(b) for b in q)) for t, q in zip(tasks, queries)]
    shutil.rmtree(lab_a)
    episodes = read_shared(tmp_path / "dump", image_size=8)
    assert [e["index"] for e in episodes] == [5, 6]
    assert all(e["fingerprint_ok"] and e["content_ok"] for e in episodes)
    assert [e["query"] for e in episodes] == [count for _, count in expected]
    args = parser().parse_args(["read-episodes", str(tmp_path / "dump"), "--image_size", "8"])
    assert args.func(args) == 0
    assert "2 episodes read back, all identical to the shared ones" in capsys.readouterr().out
    assert [fp for fp, _ in expected] == [
        json.loads(line)["fingerprint"] for line in (tmp_path / "dump" / "manifest.jsonl").read_text().splitlines()[1:]]
    with pytest.raises(ConfigError, match="ends in .jsonl"):
        share_episodes(tmp_path, "dtd", tmp_path / "m.json", num=1)
