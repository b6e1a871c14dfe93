"""End to end: the console entry point builds `mini`, evaluates, records, reports and resumes."""

import json
import os
import subprocess
import sys

import pytest

from fewshot_bench.evaluation.results import ResultsDB


def _cli(*args, home):
    env = dict(os.environ, FEWSHOT_BENCH_HOME=str(home))
    return subprocess.run([sys.executable, "-m", "fewshot_bench.cli", *args], env=env,
                          capture_output=True, text=True, timeout=900)


@pytest.mark.slow
def test_quickstart_end_to_end_and_resume(tmp_path):
    from fewshot_bench.datasets.mini import mini_vtab_specs

    home = tmp_path / "home"
    args = ("quickstart", "--episodes", "6", "--image_size", "96", "--no_progress",
            "--summary", str(tmp_path / "s.json"))
    first = _cli(*args, home=home)
    assert first.returncode == 0, first.stderr
    assert "Overall:" in first.stdout and "mini_fonts" in first.stdout
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["complete"] and not summary["failed"]
    classes = {spec.name: spec.num_classes for spec in mini_vtab_specs()}
    for source in summary["sources"]:
        if source["scoring"] == "pooled":  # far above chance: 3x chance, or halfway to 100% for few classes
            chance = 1 / classes[source["source"]]
            assert source["accuracy"] > min(3 * chance, (1 + chance) / 2), source
        else:  # episodes have >= 5 ways: chance <= 0.2
            assert source["accuracy"] > 0.5 and source["num_tasks"] == 6, source
    db_rows = ResultsDB(home / "results.sqlite")._conn.execute(
        "SELECT COUNT(*), COUNT(DISTINCT fingerprint) FROM results WHERE status='ok'").fetchone()
    assert db_rows == (len(classes) + 2 * 6,) * 2

    second = _cli(*args, home=home)  # resumes: nothing left to compute, same report
    assert second.returncode == 0, second.stderr
    assert f"{len(classes) + 12} finished tasks of this exact run are already" in second.stdout
    assert json.loads((tmp_path / "s.json").read_text()) == summary
