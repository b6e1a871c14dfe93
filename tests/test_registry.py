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
    with pytest.raises(ConfigError, match="registered twice"):
        reg.register("box")(lambda: 2)
