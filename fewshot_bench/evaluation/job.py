"""An evaluation job: everything needed to rebuild a run's objects in any process.

The job holds names and options only (it pickles), so worker processes and
distributed runners rebuild the same suite, backbone and learner from it.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable, Optional

from fewshot_bench.errors import ConfigError


def quiet_tensorflow() -> None:
    """Import TensorFlow with its C++ start-up chatter held back (shown only if the import fails)."""
    import tempfile

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    logging.getLogger("absl").setLevel(logging.ERROR)
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        try:
            import tensorflow as tf

            tf.config.list_physical_devices("GPU")
        except BaseException:
            os.dup2(saved, 2)
            held.seek(0)
            sys.stderr.write(held.read().decode(errors="replace"))
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def import_configurables() -> None:
    """Import every module that registers names or gin configurables (gin locks after parsing)."""
    import fewshot_bench.backbones  # noqa: F401
    import fewshot_bench.datasets.meta_dataset  # noqa: F401
    import fewshot_bench.datasets.mini  # noqa: F401
    import fewshot_bench.datasets.vtab  # noqa: F401
    import fewshot_bench.learners  # noqa: F401


def check_names(**named: tuple[Any, str]) -> None:
    """Fail before any work if any name is unknown, listing every unknown one."""
    from fewshot_bench.registry import parse_spec

    problems = []
    for registry, spec in named.values():
        try:
            registry.get(parse_spec(spec)[0])
        except ConfigError as e:
            problems.append(str(e))
    if problems:
        raise ConfigError("\n  ".join(problems))


def parse_gin(files: tuple[str, ...], params: tuple[str, ...]) -> str:
    """Apply gin files and bindings; return their text (part of the run's config hash)."""
    import gin

    texts = []
    for f in files:
        path = Path(f)
        if not path.exists():
            raise ConfigError(f"--gin_file {f}: no such file (the presets live in the repository's gin/ folder)")
        texts.append(path.read_text())
    repo = Path(__file__).resolve().parents[2]  # includes like "gin/suites/md_v2.gin" resolve from the checkout
    if (repo / "gin").is_dir():
        gin.add_config_file_search_path(str(repo))
    with gin.unlock_config():  # a second job in one process (tests, in-process runners) re-binds
        gin.parse_config_files_and_bindings(list(files), list(params), finalize_config=False)
    return "\n".join(texts + list(params))


def package_versions() -> dict[str, Optional[str]]:
    """Versions of the packages that shape results, and the git commit of this checkout."""
    out: dict[str, Optional[str]] = {}
    for pkg in ("fewshot-bench", "tensorflow", "keras", "tensorflow-datasets", "scikit-learn", "numpy"):
        try:
            out[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            out[pkg] = None
    try:
        out["git_commit"] = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent,
                                           capture_output=True, text=True, timeout=5).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        out["git_commit"] = None
    return out


@dataclasses.dataclass(frozen=True)
class EvalJob:
    """The names and options of one evaluation run."""

    suite: str
    learner: str
    backbone: str
    seed: int = 0
    image_size: Optional[int] = None
    gin_files: tuple[str, ...] = ()
    gin_params: tuple[str, ...] = ()
    suite_options: tuple[tuple[str, Any], ...] = ()
    feature_cache: Optional[str] = None  # directory of the persistent feature cache (None: in memory)


@dataclasses.dataclass
class JobContext:
    """The live objects of a job in one process."""

    suite: Any
    backbone: Any
    make_learner: Callable[[], Any]
    run: Any
    image_size: int


def setup(job: EvalJob) -> JobContext:
    """Resolve names, apply gin, build suite and backbone (names checked before any work)."""
    from fewshot_bench.backbones import BACKBONES
    from fewshot_bench.evaluation.results import RunInfo
    from fewshot_bench.learners import LEARNERS
    from fewshot_bench.suites import SUITES

    from fewshot_bench.backbones.features import set_default_cache_dir

    import_configurables()
    set_default_cache_dir(job.feature_cache)
    check_names(learner=(LEARNERS, job.learner), suite=(SUITES, job.suite), backbone=(BACKBONES, job.backbone))
    LEARNERS.make_configurable(job.learner)  # plugins too take gin bindings (before gin parses them)
    BACKBONES.make_configurable(job.backbone)
    config = parse_gin(job.gin_files, job.gin_params)
    suite = SUITES.create(job.suite, **dict(job.suite_options))
    backbone = BACKBONES.create(job.backbone, **({"image_size": job.image_size} if job.image_size else {}))
    run = RunInfo(suite.name, job.learner, backbone.id, f"{job.learner}\n{config}", job.seed, backbone.image_size)
    return JobContext(suite, backbone, lambda: LEARNERS.create(job.learner, backbone=backbone, seed=job.seed),
                      run, backbone.image_size)
