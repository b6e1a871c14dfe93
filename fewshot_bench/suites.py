"""The suite registry: every suite name the evaluator accepts."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from fewshot_bench.registry import Registry
from fewshot_bench.tasks import Suite

SUITES: Registry[Suite] = Registry("suite")


@SUITES.register("mini")
def _mini(data_dir: Optional[str] = None, records_root: Optional[str] = None,
          episodes: Optional[int] = None, root: Optional[str | Path] = None) -> Suite:
    from fewshot_bench.datasets.mini import MINI_EPISODES, mini_suite

    return mini_suite(root, episodes=episodes or MINI_EPISODES)


def _vtab(name: str):
    def factory(data_dir: Optional[str] = None, records_root: Optional[str] = None,
                episodes: Optional[int] = None) -> Suite:
        from fewshot_bench.datasets.vtab import vtab_suite

        return vtab_suite(name, data_dir)
    return factory


def _md(name: str):
    def factory(data_dir: Optional[str] = None, records_root: Optional[str] = None,
                episodes: Optional[int] = None) -> Suite:
        from fewshot_bench.datasets.meta_dataset import md_suite

        return md_suite(records_root, name=name, **({"num_episodes": episodes} if episodes else {}))
    return factory


for _name in ("vtab-1k", "vtab-v2"):
    SUITES.register(_name)(_vtab(_name))
for _name in ("md-v1", "md-v2"):
    SUITES.register(_name)(_md(_name))
