"""The gin presets in gin/backbones bind the backbone factories and the feature extractor."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PRESETS = sorted(p.name for p in (REPO / "gin" / "backbones").glob("*.gin"))


@pytest.fixture
def gin_config():
    import gin

    import fewshot_bench.backbones  # noqa: F401  (registers the configurables)
    import fewshot_bench.backbones.features  # noqa: F401

    gin.clear_config()
    yield gin
    gin.clear_config()


@pytest.mark.parametrize("name", PRESETS)
def test_preset_parses_and_says_how_it_is_used(gin_config, name):
    path = REPO / "gin" / "backbones" / name
    assert path.read_text().startswith("# Used by: fewshot-bench evaluate ")
    gin_config.parse_config_files_and_bindings([str(path)], [])


def test_presets_take_effect(gin_config, flat_backbone):
    from fewshot_bench.backbones.base import BACKBONES
    from fewshot_bench.backbones.features import FeatureExtractor

    gin_config.parse_config_files_and_bindings(
        [str(REPO / "gin/backbones/meta_dataset.gin"), str(REPO / "gin/backbones/feature_extraction.gin")], [])
    assert BACKBONES.create("conv4").image_size == 126
    assert BACKBONES.create("conv4(image_size=84)").image_size == 84  # an explicit argument wins
    assert FeatureExtractor(flat_backbone, cache_dir=None).batch_size == 128
