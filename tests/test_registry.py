import os
import subprocess
import sys
import types
from pathlib import Path

import pytest

from fewshot_bench.cli import listing
from fewshot_bench.errors import ConfigError
from fewshot_bench.registry import Registry, first_doc_line, parse_spec

REPO = Path(__file__).resolve().parents[1]


def test_parse_spec_with_arguments():
    assert parse_spec("clevr(task='count_all')") == ("clevr", {"task": "count_all"})
    assert parse_spec(" dsprites(predicted_attribute='label_x_position', num_classes=16) ") == (
        "dsprites", {"predicted_attribute": "label_x_position", "num_classes": 16})
    assert parse_spec("linear_probe") == ("linear_probe", {})


@pytest.mark.parametrize("bad", ["clevr(1)", "clevr(task=count_all)", "clevr(task="])
def test_parse_spec_rejects_malformed(bad):
    with pytest.raises(ConfigError, match="clevr"):
        parse_spec(bad)


def test_create_passes_arguments_and_lists_names_on_typo():
    reg = Registry("widget")
    reg.register("box")(lambda size=1, color="red": (size, color))
    reg.register("ball")(lambda: "ball")
    assert reg.create("box(size=3)", color="blue") == (3, "blue")
    with pytest.raises(ConfigError) as err:
        reg.create("bx")
    assert "Did you mean 'box'" in str(err.value) and "ball, box" in str(err.value)
    with pytest.raises(ConfigError, match="unexpected keyword"):
        reg.create("box(weight=2)")


def test_registering_a_name_twice_is_refused():
    reg = Registry("widget")
    reg.register("box")(lambda: 1)
    with pytest.raises(ConfigError, match="claimed twice: by built-in"):
        reg.register("box")(lambda: 2)


class GoodLearner:
    def __init__(self, scale=1):
        self.scale = scale

    def fit(self, support, num_classes, validation=None):
        return self.scale


class NoFit:
    pass


def test_import_path_resolves_with_arguments():
    reg = Registry("learner", required_methods=("fit",))
    obj = reg.create("tests.test_registry:GoodLearner(scale=3)")
    assert type(obj).__name__ == "GoodLearner" and obj.scale == 3  # (imported under another module name)
    assert parse_spec("my_pkg.mod:Cls(a=1)") == ("my_pkg.mod:Cls", {"a": 1})


def test_import_path_errors_name_the_path_and_the_problem():
    reg = Registry("learner", required_methods=("fit",))
    with pytest.raises(ConfigError, match=r"importing module 'no_such_pkg\.mod' failed: ModuleNotFoundError"):
        reg.get("no_such_pkg.mod:X")
    with pytest.raises(ConfigError, match="has no attribute 'Missing'"):
        reg.get("tests.test_registry:Missing")
    with pytest.raises(ConfigError, match="missing method fit"):
        reg.get("tests.test_registry:NoFit")


class _FakeEntryPoint:
    def __init__(self, name, value, dist, obj):
        self.name, self.value, self.obj = name, value, obj
        self.dist = type("Dist", (), {"name": dist})()

    def load(self):
        return self.obj


def test_entry_points_are_found_by_name_and_conflicts_refused(monkeypatch):
    import importlib.metadata

    eps = [_FakeEntryPoint("centroid", "pkg_a.m:GoodLearner", "pkg-a", GoodLearner)]
    monkeypatch.setattr(importlib.metadata, "entry_points", lambda group: eps if group == "grp" else [])
    reg = Registry("learner", "grp", required_methods=("fit",))
    reg.register("builtin")(GoodLearner)
    assert reg.create("centroid(scale=2)").scale == 2
    assert reg.origin("centroid") == "entry point pkg_a.m:GoodLearner of package pkg-a"
    assert reg.names() == ["builtin", "centroid"]

    eps.append(_FakeEntryPoint("centroid", "pkg_b.m:GoodLearner", "pkg-b", GoodLearner))
    clash = Registry("learner", "grp", required_methods=("fit",))
    with pytest.raises(ConfigError) as err:
        clash.names()
    assert "pkg-a" in str(err.value) and "pkg-b" in str(err.value)


def test_plugins_become_gin_configurable():
    import gin

    reg = Registry("learner", required_methods=("fit",))
    selector = reg.make_configurable("tests.test_registry:GoodLearner")
    assert selector.endswith("GoodLearner")
    with gin.unlock_config():
        gin.bind_parameter(f"{selector}.scale", 7)
    try:
        assert reg.create("tests.test_registry:GoodLearner").scale == 7
        assert reg.create("tests.test_registry:GoodLearner(scale=2)").scale == 2  # explicit beats gin
    finally:
        gin.clear_config()


def test_first_doc_line_is_the_first_non_blank_line_of_the_own_docstring():
    def documented():
        """
        Two words.

        More.
        """

    class Base:
        """Base doc."""

    class Child(Base):
        pass

    assert first_doc_line(documented) == "Two words."
    assert first_doc_line(Child) == ""  # the base class's docstring does not describe the child
    assert first_doc_line(lambda: None) == ""


def _late_widgets(tmp_path, monkeypatch) -> types.ModuleType:
    """A module ``late_widgets`` on the path that registers ``late`` into ``widget_home.REG`` when imported."""
    home = types.ModuleType("widget_home")
    monkeypatch.setitem(sys.modules, "widget_home", home)
    (tmp_path / "late_widgets.py").write_text(
        "import widget_home\n\n"
        "@widget_home.REG.register('late')\n"
        "def late():\n"
        "    \"\"\"A late widget.\n\n    Built elsewhere.\n    \"\"\"\n"
        "    return 'late'\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    return home


@pytest.mark.parametrize("first_need", ["names", "get"])
def test_builtin_module_is_imported_on_first_need(first_need, tmp_path, monkeypatch):
    home = _late_widgets(tmp_path, monkeypatch)
    home.REG = Registry("widget")
    home.REG.register("box")(lambda: "box")
    home.REG.add_builtin_module("late_widgets")
    assert "late_widgets" not in sys.modules  # naming the module imports nothing
    try:
        if first_need == "names":
            assert home.REG.names() == ["box", "late"]
        assert home.REG.create("late") == "late"  # an unregistered name imports the pending module
        assert home.REG.origin("late") == "built-in (late_widgets)"
        assert home.REG.description("late") == "A late widget."
    finally:
        sys.modules.pop("late_widgets", None)


def test_a_built_in_module_that_fails_to_import_stays_pending():
    reg = Registry("widget")
    reg.add_builtin_module("no_such_widgets_module_xyz")
    for _ in range(2):  # the second lookup raises the real cause again, not "unknown widget"
        with pytest.raises(ModuleNotFoundError, match="no_such_widgets_module_xyz"):
            reg.names()


def test_listing_pads_name_and_origin_into_columns():
    rows = [("a", "x", "First."), ("bbb", "yy", "")]
    assert listing(rows) == ["a    x   First.", "bbb  yy"]
    assert listing([]) == []


def _python(code: str, *args: str, tmp_path: Path) -> str:
    env = dict(os.environ, PYTHONPATH=str(REPO), FEWSHOT_BENCH_HOME=str(tmp_path), TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.run([sys.executable, "-c", code, *args], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_backbones_resolve_meta_trained_without_importing_the_learners_first(tmp_path):
    """A fresh interpreter that imports only the backbones package still finds ``meta_trained``."""
    code = ("import sys\n"
            "from fewshot_bench.backbones import BACKBONES\n"
            "assert 'fewshot_bench.learners' not in sys.modules\n"
            "print(' '.join(BACKBONES.names()))\n")
    assert "meta_trained" in _python(code, tmp_path=tmp_path).split()


BUILT_IN = {
    "backbones": {"efficientnet_lite0", "bit_r50x1", "bit_r101x1", "bit_r50x3", "bit_r101x3", "bit_r152x4",
                  "conv4", "resnet18", "saved_model", "meta_trained", "keras_resnet50", "keras_resnet50v2",
                  *(f"keras_efficientnet_b{i}" for i in range(8))},
    "learners": {"linear_probe", "head2toe", "finetune", "bit", "protonet", "protomaml"},
    "suites": {"vtab-1k", "vtab-v2", "md-v1", "md-v2", "vtab+md", "mini"},
}


def test_cli_listings_name_every_built_in_with_origin_and_description(tmp_path):
    """``fewshot-bench backbones|learners|suites``: one line per name, origin, then description."""
    code = ("import sys\n"
            "from fewshot_bench.cli import main\n"
            "for command in sys.argv[1:]:\n"
            "    print('==', command)\n"
            "    assert main([command]) == 0\n")
    listed: dict[str, dict[str, tuple[str, str]]] = {}
    for line in _python(code, *BUILT_IN, tmp_path=tmp_path).splitlines():
        if line.startswith("== "):
            command = line[3:]
            listed[command] = {}
            continue
        name, origin_and_description = line.split(maxsplit=1)
        origin, _, description = origin_and_description.partition(")  ")
        listed[command][name] = (origin + ")", description.strip())
    for command, names in BUILT_IN.items():
        built_in = {name for name, (origin, _) in listed[command].items() if origin.startswith("built-in (")}
        assert built_in == names, command
        assert all(description for _, description in listed[command].values()), listed[command]
    assert listed["backbones"]["meta_trained"][0] == "built-in (fewshot_bench.learners.meta_training)"
    assert listed["learners"]["protonet"][0] == "built-in (fewshot_bench.learners.protonet)"
    assert listed["backbones"]["meta_trained"][1].startswith("A backbone meta-trained by")
