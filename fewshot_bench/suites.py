"""The suite registry: every suite name the evaluator accepts.

Each factory checks that the data of every part of its suite is in place
before any work starts, and names each missing part with the command that
prepares it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from fewshot_bench.errors import DataError, FewshotBenchError
from fewshot_bench.registry import Registry
from fewshot_bench.tasks import Suite

SUITES: Registry[Suite] = Registry("suite")


def _missing_vtab(suite_name: str, data_dir: Optional[str]) -> list[str]:
    from fewshot_bench.datasets.vtab import check_prepared, resolve_data_dir, suite_specs

    root = resolve_data_dir(data_dir)
    problems = []
    for spec in suite_specs(suite_name):
        try:
            check_prepared(spec, root, suite_name)
        except FewshotBenchError as e:
            problems.append(str(e))
    return problems


def _missing_md(suite_name: str, records_root: Optional[str]) -> list[str]:
    from fewshot_bench.datasets.meta_dataset import MD_V1_TEST_SOURCES, MD_V2_TEST_SOURCES

    if not records_root:
        return [f"suite {suite_name!r} needs --records_root: the folder holding one sub-folder per Meta-Dataset "
                f"source (dataset_spec.json + <class_id>.tfrecords), as `fewshot-bench prepare md` writes it"]
    sources = MD_V1_TEST_SOURCES if suite_name == "md-v1" else MD_V2_TEST_SOURCES
    return [f"Meta-Dataset source {s!r}: no {Path(records_root) / s / 'dataset_spec.json'}; convert it with "
            f"`fewshot-bench prepare md --source {s} --raw DIR --out {records_root}`"
            for s in sources if not (Path(records_root) / s / "dataset_spec.json").exists()]


def _refuse(suite_name: str, problems: list[str]) -> None:
    if problems:
        raise DataError(f"suite {suite_name!r}: data missing for {len(problems)} part(s):\n  "
                        + "\n  ".join(problems))


@SUITES.register("mini")
def mini(data_dir: Optional[str] = None, records_root: Optional[str] = None,
         episodes: Optional[int] = None, root: Optional[str | Path] = None) -> Suite:
    """The offline suite, built on first use into ``$FEWSHOT_BENCH_HOME/mini``."""
    from fewshot_bench.datasets.mini import MINI_EPISODES, mini_suite

    return mini_suite(root, episodes=episodes or MINI_EPISODES)


def _vtab(name: str):
    def factory(data_dir: Optional[str] = None, records_root: Optional[str] = None,
                episodes: Optional[int] = None) -> Suite:
        from fewshot_bench.datasets.vtab import vtab_suite

        _refuse(name, _missing_vtab(name, data_dir))
        return vtab_suite(name, data_dir)
    factory.__doc__ = f"{name} over TFDS data in --data_dir."
    return factory


def _md(name: str):
    def factory(data_dir: Optional[str] = None, records_root: Optional[str] = None,
                episodes: Optional[int] = None) -> Suite:
        from fewshot_bench.datasets.meta_dataset import md_suite

        _refuse(name, _missing_md(name, records_root))
        return md_suite(records_root, name=name, **({"num_episodes": episodes} if episodes else {}))
    factory.__doc__ = f"{name} test episodes over Meta-Dataset records in --records_root."
    return factory


@SUITES.register("vtab+md")
def vtab_md(data_dir: Optional[str] = None, records_root: Optional[str] = None,
            episodes: Optional[int] = None) -> Suite:
    """VTAB+MD (Dumoulin et al. 2021): VTAB-v2's 18 tasks beside MD-v2's 8 test sources x 600 episodes."""
    from fewshot_bench.datasets.meta_dataset import md_suite
    from fewshot_bench.datasets.vtab import vtab_suite

    _refuse("vtab+md", _missing_vtab("vtab-v2", data_dir) + _missing_md("md-v2", records_root))
    vtab = vtab_suite("vtab-v2", data_dir)
    md = md_suite(records_root, name="md-v2", **({"num_episodes": episodes} if episodes else {}))
    return Suite("vtab+md", vtab.sources + md.sources,
                 description="VTAB+MD: VTAB-v2 (18 tasks) and MD-v2 (8 sources), reported side by side")


for _name in ("vtab-1k", "vtab-v2"):
    SUITES.register(_name)(_vtab(_name))
for _name in ("md-v1", "md-v2"):
    SUITES.register(_name)(_md(_name))
