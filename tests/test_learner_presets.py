"""Every learner preset in gin/learners/ parses, names its learner, and every binding reaches the learner."""

import re
from pathlib import Path

import pytest

from fewshot_bench.learners import LEARNERS
from fewshot_bench.testing import tiny_backbone

REPO = Path(__file__).resolve().parents[1]
PRESETS = sorted(p.name for p in (REPO / "gin" / "learners").glob("*.gin"))
BINDING = re.compile(r"^(\w+)\.(\w+)\s*=", re.MULTILINE)
INCLUDE = re.compile(r"^include '([^']+)'", re.MULTILINE)


def bindings(path: Path) -> set[tuple[str, str]]:
    """(Class, parameter) bound by a gin file and the files it includes."""
    text = path.read_text()
    found = set(BINDING.findall(text))
    for included in INCLUDE.findall(text):
        found |= bindings(REPO / included)
    return found


def test_there_are_presets_for_every_built_in_learner():
    named = {re.search(r"--learner (\w+)", (REPO / "gin" / "learners" / p).read_text()).group(1) for p in PRESETS}
    assert named == {n for n in LEARNERS.names() if LEARNERS.origin(n).startswith("built-in")}


@pytest.mark.parametrize("preset", PRESETS)
def test_preset_binds_its_learner(preset, monkeypatch):
    import gin

    from fewshot_bench.evaluation.job import parse_gin

    path = REPO / "gin" / "learners" / preset
    text = path.read_text()
    assert text.startswith("# Used by:  fewshot-bench "), "a preset says how it is used"
    name = re.search(r"--learner (\w+)", text).group(1)
    monkeypatch.chdir(REPO)  # presets are named relative to the repository, as in their "Used by" lines
    try:
        parse_gin((f"gin/learners/{preset}",), ())
        learner = LEARNERS.create(name, backbone=tiny_backbone(), seed=0)
        bound = bindings(path)
        assert bound and {cls for cls, _ in bound} == {type(learner).__name__}
        operative = gin.operative_config_str()  # what the learner's constructor actually took from gin
        for cls, parameter in bound:
            assert re.search(rf"^{cls}\.{parameter} = ", operative, re.MULTILINE), (preset, cls, parameter)
    finally:
        gin.clear_config()
