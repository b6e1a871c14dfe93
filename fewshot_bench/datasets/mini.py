"""The built-in offline suite ``mini``: its tasks as the real readers see them.

The data is built by :mod:`data_prep.mini` (TFDS datasets for the VTAB-style
tasks, Meta-Dataset records for the MD-style sources); this module turns it
into a :class:`Suite` through the same readers as VTAB and Meta-Dataset.

VTAB-style tasks mirror VTAB-1k exactly: support = train800 = train[:800]
+ val200 = train[800:1000] (1000 examples), query = the test split.
MD-style sources sample test-split episodes with the MD protocol's defaults.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from fewshot_bench.datasets.meta_dataset import md_source
from fewshot_bench.datasets.vtab import VtabTaskSpec, vtab_source
from fewshot_bench.datasets.vtab_labels import binned_attribute
from fewshot_bench.tasks import Suite

MINI_TRAIN, MINI_VAL, MINI_TEST = "train[:800]", "train[800:1000]", "test"
MINI_EPISODES = 50


def mini_vtab_specs() -> list[VtabTaskSpec]:
    """The VTAB-style tasks of ``mini``, labelled by VTAB's rules (dSprites binned to 16)."""
    from data_prep.mini import TFDS_DATASETS, VTAB_TASKS

    specs = []
    for task in VTAB_TASKS:
        label_fn = None if task.label_key == "label" and task.label_classes == task.num_classes else \
            binned_attribute(task.label_key, task.label_classes, task.num_classes)
        specs.append(VtabTaskSpec(task.name, task.group, task.dataset, task.num_classes, MINI_TRAIN, MINI_VAL,
                                  MINI_TEST, label_fn=label_fn,
                                  image_max_value=float(TFDS_DATASETS[task.dataset].pixel_max)))
    return specs


def mini_suite(root: Optional[str | Path] = None, episodes: int = MINI_EPISODES, seed: int = 0,
               query_batch_size: int = 500) -> Suite:
    """The ``mini`` suite over the data in ``root`` (built there first if missing or damaged)."""
    from data_prep.mini import MD_SOURCES, ensure_mini

    root = ensure_mini(root, seed=seed)
    sources = [vtab_source(spec, data_dir=root / "tfds", suite="mini", query_batch_size=query_batch_size)
               for spec in mini_vtab_specs()]
    sources += [md_source(root / "md", name, split="test", num_episodes=episodes, suite="mini", group="md",
                          query_batch_size=query_batch_size) for name in MD_SOURCES]
    return Suite("mini", tuple(sources),
                 description=f"offline mini suite: {len(sources) - len(MD_SOURCES)} VTAB-style tasks, "
                             f"{len(MD_SOURCES)} MD-style sources x {episodes} episodes")
