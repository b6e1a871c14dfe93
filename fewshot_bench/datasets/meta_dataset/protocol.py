"""The MD-v1 and MD-v2 evaluation protocols as suites of ``md_source`` task sources.

MD-v1 (Triantafillou et al. 2020) tests on 10 sources. MD-v2 (Dumoulin et al.
2021) drops ilsvrc_2012 (its classes all go to training, as ``ilsvrc_2012_v2``)
and vgg_flower (which VTAB evaluates) from the test sources. Both use 600 test
episodes per source. The presets in ``gin/suites/md_v{1,2}.gin`` bind these values.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

import gin

from fewshot_bench.datasets.meta_dataset.episodes import md_source
from fewshot_bench.datasets.meta_dataset.sampler import EpisodeConfig
from fewshot_bench.errors import ConfigError
from fewshot_bench.tasks import Suite

MD_V1_TEST_SOURCES = ("ilsvrc_2012", "omniglot", "aircraft", "cu_birds", "dtd", "quickdraw", "fungi",
                      "vgg_flower", "traffic_sign", "mscoco")
MD_V1_TRAIN_SOURCES = ("ilsvrc_2012", "omniglot", "aircraft", "cu_birds", "dtd", "quickdraw", "fungi",
                       "vgg_flower")
MD_V2_TEST_SOURCES = ("aircraft", "cu_birds", "dtd", "fungi", "mscoco", "omniglot", "quickdraw", "traffic_sign")
MD_V2_TRAIN_SOURCES = ("ilsvrc_2012_v2", "omniglot", "aircraft", "cu_birds", "dtd", "quickdraw", "fungi")
PROTOCOL_SOURCES = {"md-v1": MD_V1_TEST_SOURCES, "md-v2": MD_V2_TEST_SOURCES}
NUM_TEST_EPISODES = 600

gin.external_configurable(EpisodeConfig, module="md")


@gin.configurable("md_suite", denylist=["records_root"])
def md_suite(records_root: str | Path, name: str = "md-v2", sources: Optional[Sequence[str]] = None,
             split: str = "test", num_episodes: int = NUM_TEST_EPISODES,
             episode_config: Optional[EpisodeConfig] = None, group: str = "md") -> Suite:
    """The suite ``name`` ("md-v1" or "md-v2"): one episode source per test source.

    ``sources`` overrides the protocol's list (a custom suite then needs its own name).
    """
    if sources is None:
        if name not in PROTOCOL_SOURCES:
            raise ConfigError(f"unknown Meta-Dataset protocol {name!r}: use one of {sorted(PROTOCOL_SOURCES)} "
                              f"or pass sources=[...]")
        sources = PROTOCOL_SOURCES[name]
    if not records_root:
        raise ConfigError(f"suite {name!r} needs the Meta-Dataset records root (--records_root): the folder "
                          f"holding one sub-folder per source, as the reference converter writes them")
    task_sources = tuple(md_source(records_root, s, split=split, num_episodes=num_episodes, suite=name,
                                   group=group, episode_config=episode_config) for s in sources)
    return Suite(name, task_sources, description=f"Meta-Dataset {name}: {num_episodes} {split} episodes per source")
