"""The worked example plugin (examples/nearest_centroid_plugin): it installs offline, is found the
three ways a learner can be named, and evaluates on `mini` through the console script."""

import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from fewshot_bench.errors import ConfigError
from fewshot_bench.evaluation.evaluator import run_task
from fewshot_bench.learners import LEARNERS
from fewshot_bench.registry import Registry
from fewshot_bench.tasks import QueryStream, Task
from fewshot_bench.testing import tiny_backbone, tiny_task

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "nearest_centroid_plugin"
DIST = "fewshot-bench-nearest-centroid"
ENTRY_POINT = "nearest_centroid.learner:NearestCentroid"


def install_example(work: Path, dist_name: str = DIST) -> Path:
    """Install a copy of the example (named ``dist_name``) into ``work/site`` with pip, offline."""
    source = work / "src"
    shutil.copytree(EXAMPLE, source, ignore=shutil.ignore_patterns(
        "build", "*.egg-info", "__pycache__", ".pytest_cache"))  # pip builds in the copy, not in the repo
    setup_cfg = source / "setup.cfg"
    setup_cfg.write_text(setup_cfg.read_text().replace(f"name = {DIST}", f"name = {dist_name}"))
    site = work / "site"
    done = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "--no-build-isolation",
                           "--disable-pip-version-check", "--quiet", "--target", str(site), str(source)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, ("pip could not build the example offline; it needs setuptools in this "
                                  f"environment (pip install setuptools):\n{done.stdout}\n{done.stderr}")
    return site


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    return install_example(tmp_path_factory.mktemp("plugin"))


@pytest.fixture
def on_path(installed, monkeypatch) -> Path:
    """The installed copy importable (and its entry points visible) in this process, for one test."""
    monkeypatch.syspath_prepend(str(installed))
    for name in [m for m in sys.modules if m == "nearest_centroid" or m.startswith("nearest_centroid.")]:
        monkeypatch.delitem(sys.modules, name)
    return installed


def _tiny_task(ways: int) -> Task:
    t = tiny_task(ways, seed=1)
    return Task(t.support, QueryStream.from_examples(t.query, batch_size=5), ways, "conformance", "tiny", "tiny",
                "0", 1)


def test_installed_package_declares_its_entry_point(installed):
    (dist,) = importlib.metadata.distributions(path=[str(installed)])
    assert dist.metadata["Name"] == DIST
    (ep,) = dist.entry_points.select(group="fewshot_bench.learners")
    assert (ep.name, ep.value) == ("nearest_centroid", ENTRY_POINT)
    assert sorted(p.name for p in installed.iterdir() if not p.name.endswith(".dist-info")) == ["nearest_centroid"]


def test_each_of_the_three_ways_finds_and_runs_a_learner(on_path):
    plugins = Registry("learner", "fewshot_bench.learners", required_methods=("fit",))  # sees the new path
    ways = {
        "registered name": (LEARNERS, "linear_probe"),
        "import path": (LEARNERS, f"{ENTRY_POINT}(metric='cosine')"),
        "entry point": (plugins, "nearest_centroid"),
    }
    backbone, task = tiny_backbone(), _tiny_task(4)
    for way, (registry, spec) in ways.items():
        learner = registry.create(spec, backbone=backbone, seed=0)
        outcome = run_task(learner, task)
        assert outcome.total == 12 and outcome.correct >= 11, (way, outcome)
    assert LEARNERS.origin("linear_probe").startswith("built-in")
    assert plugins.origin("nearest_centroid") == f"entry point {ENTRY_POINT} of package {DIST}"
    imported = LEARNERS.create(f"{ENTRY_POINT}(metric='cosine')", backbone=backbone)
    assert imported.metric == "cosine"
    assert Path(sys.modules["nearest_centroid.learner"].__file__).is_relative_to(on_path)


def test_two_packages_claiming_one_name_are_refused(on_path, tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(install_example(tmp_path, dist_name="other-centroids")))
    with pytest.raises(ConfigError) as err:
        Registry("learner", "fewshot_bench.learners", required_methods=("fit",)).names()
    message = str(err.value)
    assert "'nearest_centroid' is claimed twice" in message
    assert f"package {DIST}" in message and "package other-centroids" in message


def _cli(*args, home: Path, site: Path) -> subprocess.CompletedProcess:
    path = os.pathsep.join(p for p in (str(site), str(REPO), os.environ.get("PYTHONPATH")) if p)
    env = dict(os.environ, FEWSHOT_BENCH_HOME=str(home), PYTHONPATH=path)
    return subprocess.run([sys.executable, "-m", *args], env=env, capture_output=True, text=True, timeout=900,
                          cwd=home)


@pytest.mark.slow
def test_example_tests_itself_lists_and_evaluates_on_mini_from_the_command_line(installed, tmp_path):
    from fewshot_bench.datasets.mini import mini_vtab_specs

    home = tmp_path / "home"
    home.mkdir()
    own_tests = _cli("pytest", "-q", "-p", "no:cacheprovider", str(installed.parent / "src"), home=home,
                     site=installed)
    assert own_tests.returncode == 0 and " passed" in own_tests.stdout, own_tests.stdout + own_tests.stderr

    listed = _cli("fewshot_bench.cli", "learners", home=home, site=installed)
    assert listed.returncode == 0, listed.stderr
    assert f"entry point {ENTRY_POINT} of package {DIST}" in listed.stdout

    typo = _cli("fewshot_bench.cli", "evaluate", "--suite", "mini", "--backbone", "efficientnet_lite0",
                "--learner", "nearest_centroid.lerner:NearestCentroid", home=home, site=installed)
    assert typo.returncode == 2
    assert "importing module 'nearest_centroid.lerner' failed: ModuleNotFoundError" in typo.stderr

    summary_path = tmp_path / "s.json"
    run = _cli("fewshot_bench.cli", "evaluate", "--suite", "mini", "--learner", "nearest_centroid", "--backbone",
               "efficientnet_lite0", "--episodes", "3", "--image_size", "64", "--no_progress",
               "--results", str(tmp_path / "r.sqlite"), "--summary", str(summary_path), home=home, site=installed)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "learner nearest_centroid" in run.stdout and "Overall:" in run.stdout
    summary = json.loads(summary_path.read_text())
    assert summary["complete"] and not summary["failed"]
    classes = {spec.name: spec.num_classes for spec in mini_vtab_specs()}
    for source in summary["sources"]:
        if source["scoring"] == "pooled":
            assert source["accuracy"] > 1.5 / classes[source["source"]], source
        else:  # episodes have 5 or more ways: chance <= 0.2
            assert source["accuracy"] > 0.4 and source["num_tasks"] == 3, source
