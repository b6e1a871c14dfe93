"""Episodes are identical in two separate processes with the same seed, whatever the build order."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

from fewshot_bench.datasets.meta_dataset import md_source
from fewshot_bench.datasets.meta_dataset.describe import describe_episodes
from fewshot_bench.datasets.meta_dataset.writer import write_synthetic_source
from fewshot_bench.tasks import fingerprint

REPO = Path(__file__).resolve().parents[1]
SPECS = REPO.parent / "shared" / "meta_dataset" / "dataset_specs"

CHILD = r"""
import hashlib, json, sys
from fewshot_bench.datasets.meta_dataset import md_source
from fewshot_bench.datasets.meta_dataset.describe import describe_episodes
from fewshot_bench.tasks import fingerprint
specs, root = sys.argv[1], sys.argv[2]
out = {"described": [list(describe_episodes(f"{specs}/{name}_dataset_spec.json", split=split, num=30, seed=9))
                     for name, split in (("ilsvrc_2012", "train"), ("omniglot", "test"), ("quickdraw", "test"))]}
source = md_source(root, "toy")
tasks = [source.build(i, 9, 6) for i in range(6)]
out["tasks"] = [[fingerprint(t.support, t.query), hashlib.sha256(t.support.images.tobytes()).hexdigest()]
                for t in tasks]
print(json.dumps(out))
"""


def test_two_processes_produce_identical_episodes(tmp_path):
    counts = {c: 10 + c for c in range(8)}
    write_synthetic_source(tmp_path / "toy", "toy", {"train": 1, "valid": 1, "test": 6}, counts, image_size=6)
    env = dict(os.environ, PYTHONPATH=str(REPO), PYTHONHASHSEED="12345", TF_CPP_MIN_LOG_LEVEL="3")
    child = subprocess.run([sys.executable, "-c", CHILD, str(SPECS), str(tmp_path)], env=env, cwd=tmp_path,
                           capture_output=True, text=True, timeout=300)
    assert child.returncode == 0, child.stderr[-2000:]
    theirs = json.loads(child.stdout.strip().splitlines()[-1])
    ours = [list(describe_episodes(SPECS / f"{name}_dataset_spec.json", split=split, num=30, seed=9))
            for name, split in (("ilsvrc_2012", "train"), ("omniglot", "test"), ("quickdraw", "test"))]
    assert theirs["described"] == ours
    source = md_source(tmp_path, "toy")
    built_backwards = {i: source.build(i, 9, 6) for i in reversed(range(6))}
    mine = [[fingerprint(t.support, t.query), hashlib.sha256(t.support.images.tobytes()).hexdigest()]
            for t in (built_backwards[i] for i in range(6))]
    assert theirs["tasks"] == mine
    assert len({fp for fp, _ in mine}) == 6
