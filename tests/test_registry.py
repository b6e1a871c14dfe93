import pytest

from fewshot_bench.errors import ConfigError
from fewshot_bench.registry import Registry, parse_spec


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
