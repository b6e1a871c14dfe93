"""Where fewshot_bench keeps its files: ``$FEWSHOT_BENCH_HOME`` (default ``~/.cache/fewshot_bench``)."""

from __future__ import annotations

import os
from pathlib import Path


def home() -> Path:
    """The root of the mini suite, feature cache, weights and default results database."""
    value = os.environ.get("FEWSHOT_BENCH_HOME")
    return Path(value).expanduser() if value else Path.home() / ".cache" / "fewshot_bench"
