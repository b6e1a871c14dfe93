"""The Beam DirectRunner run gives the database rows and scores of the in-process run."""

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _evaluate(tmp_path, name, *extra):
    cmd = [sys.executable, "-m", "fewshot_bench.cli", "evaluate", "--suite", "tests.toy_plugins:toy_suite",
           "--backbone", "tests.toy_plugins:toy_backbone", "--learner", "tests.toy_plugins:ToyLearner(fail_on=4)",
           "--no_progress", "--seed", "5", "--results", str(tmp_path / f"{name}.sqlite"),
           "--summary", str(tmp_path / f"{name}.json"), *extra]
    env = dict(os.environ, FEWSHOT_BENCH_HOME=str(tmp_path / "home"),
               PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    rows = sqlite3.connect(tmp_path / f"{name}.sqlite").execute(
        "SELECT source, task_id, status, error, correct, total, fingerprint FROM results "
        "ORDER BY source, task_id").fetchall()
    return proc, json.loads((tmp_path / f"{name}.json").read_text()), rows


@pytest.mark.slow
def test_beam_direct_runner_matches_in_process(tmp_path):
    local_proc, local, local_rows = _evaluate(tmp_path, "local")
    beam_proc, beam, beam_rows = _evaluate(tmp_path, "beam", "--runner", "beam",
                                           "--beam_option=--direct_num_workers=1")
    assert local_proc.returncode == beam_proc.returncode == 1, beam_proc.stderr  # one task fails on purpose
    assert beam == local
    assert beam_rows == local_rows and len(beam_rows) == 8
    assert any(r[2] == "failed" and "refusing 4 classes" in r[3] for r in beam_rows)
