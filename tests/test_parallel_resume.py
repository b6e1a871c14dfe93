"""Workers, timeouts, crashes and kill-and-resume, through the console entry point."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TOY = ["--suite", "tests.toy_plugins:toy_suite", "--backbone", "tests.toy_plugins:toy_backbone",
       "--no_progress", "--seed", "3"]


def _cmd(tmp_path, name, *extra, learner="tests.toy_plugins:ToyLearner"):
    return [sys.executable, "-m", "fewshot_bench.cli", "evaluate", *TOY, "--learner", learner,
            "--results", str(tmp_path / f"{name}.sqlite"), "--summary", str(tmp_path / f"{name}.json"), *extra]


def _env(tmp_path):
    return dict(os.environ, FEWSHOT_BENCH_HOME=str(tmp_path / "home"),
                PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))


def _run(tmp_path, name, *extra, learner="tests.toy_plugins:ToyLearner"):
    proc = subprocess.run(_cmd(tmp_path, name, *extra, learner=learner), cwd=REPO, env=_env(tmp_path),
                          capture_output=True, text=True, timeout=600)
    summary = json.loads((tmp_path / f"{name}.json").read_text())
    return proc, summary


@pytest.mark.slow
def test_workers_timeout_and_crash_are_isolated_and_match_in_process(tmp_path):
    base_proc, base = _run(tmp_path, "base")
    assert base_proc.returncode == 0, base_proc.stderr
    assert base["complete"] and 0.5 < base["overall"] < 1.0  # noise=0.2 makes scores non-trivial

    proc, two = _run(tmp_path, "two", "--workers", "2")
    assert proc.returncode == 0, proc.stderr
    assert two == base  # same rows whichever worker ran which task

    proc, broken = _run(tmp_path, "broken", "--workers", "2", "--task_timeout", "20",
                        learner="tests.toy_plugins:ToyLearner(hang_on=3, crash_on=4)")
    assert proc.returncode == 1  # incomplete
    failed = "\n".join(broken["failed"])
    assert "three/three: TimeoutError: task exceeded --task_timeout 20 s" in failed
    assert "four/four: WorkerDied: the worker process ended with exit code 9" in failed
    episodic = [s for s in broken["sources"] if s["source"] == "episodic"][0]
    assert episodic == [s for s in base["sources"] if s["source"] == "episodic"][0]


@pytest.mark.slow
def test_kill_and_resume_gives_the_uninterrupted_report(tmp_path):
    proc, uninterrupted = _run(tmp_path, "full", "--episodes", "12")
    assert proc.returncode == 0, proc.stderr

    cmd = _cmd(tmp_path, "killed", "--episodes", "12", learner="tests.toy_plugins:ToyLearner(sleep=0.4)")
    victim = subprocess.Popen(cmd, cwd=REPO, env=_env(tmp_path), stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    db = tmp_path / "killed.sqlite"
    deadline = time.time() + 300
    import sqlite3

    while time.time() < deadline:  # kill -9 once some, but not all, rows are in
        if db.exists():
            try:
                n = sqlite3.connect(db).execute("SELECT COUNT(*) FROM results").fetchone()[0]
            except sqlite3.OperationalError:
                n = 0
            if n >= 4:
                break
        time.sleep(0.2)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    done = sqlite3.connect(db).execute("SELECT COUNT(*) FROM results").fetchone()[0]
    assert 4 <= done < 14

    # resume: the same command (sleep is not part of the scores, but is part of the config: same learner spec)
    proc = subprocess.run(cmd, cwd=REPO, env=_env(tmp_path), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert f"{done} finished tasks of this exact run are already" in proc.stdout
    resumed = json.loads((tmp_path / "killed.json").read_text())
    assert resumed == uninterrupted
