"""Plain-text and JSON renderings of an evaluation :class:`Summary`."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from fewshot_bench.evaluation.scores import Summary
from fewshot_bench.tasks import EPISODES

BENCHMARK_TITLES = {"vtab": "VTAB", "md": "MD"}


def _pct(x: float) -> str:
    return "  n/a" if x is None or math.isnan(x) else f"{100 * x:5.1f}"


def format_summary(summary: Summary, title: str = "") -> str:
    """The per-task / per-source table with group, half and overall means."""
    lines = [title] if title else []
    vtab = [s for s in summary.sources if s.scoring != EPISODES]
    md = [s for s in summary.sources if s.scoring == EPISODES]
    if vtab:
        lines += ["", "Tasks scored VTAB-style (accuracy pooled over every query example, %)",
                  f"  {'group':<12} {'task':<40} {'acc':>6}"]
        lines += [f"  {s.group:<12} {s.source:<40} {_pct(s.accuracy):>6}"
                  + ("" if not s.num_failed else "   FAILED") for s in vtab]
    if md:
        lines += ["", "Sources scored MD-style (mean of per-episode accuracy ± 95% interval, %)",
                  f"  {'source':<40} {'acc':>6} {'± ci':>6} {'episodes':>9}"]
        for s in md:
            ci = "   n/a" if s.interval is None else f"{100 * s.interval:6.2f}"
            lines.append(f"  {s.source:<40} {_pct(s.accuracy):>6} {ci} {s.num_tasks:>5}/{s.expected:<4}")
    if summary.group_means:
        lines += ["", "Group means (%): " + " | ".join(f"{g} {_pct(v).strip()}"
                                                      for g, v in summary.group_means.items())]
        halves = []
        for b, v in summary.benchmark_means.items():
            n = sum(1 for s in summary.sources if s.benchmark == b)
            unit = "tasks" if b == "vtab" else "sources"
            halves.append(f"{BENCHMARK_TITLES.get(b, b)} mean over {n} {unit}: {_pct(v).strip()}")
        lines.append("   ".join(halves))
        label = "Overall" if summary.complete else "Overall (PARTIAL: some tasks missing or failed)"
        lines.append(f"{label}: {_pct(summary.overall).strip()}   [{Summary.OVERALL_DEFINITION}]")
    else:
        lines += ["", "No summary score: the suite is incomplete (rerun to finish it, or ask for --partial)."]
    if summary.failed:
        lines += ["", f"Failed ({len(summary.failed)}):"] + [f"  {f}" for f in summary.failed]
    if summary.missing:
        lines += ["", f"Missing ({len(summary.missing)}):"] + [f"  {m}" for m in summary.missing]
    return "\n".join(lines)


def summary_to_dict(summary: Summary) -> dict[str, Any]:
    """A JSON-ready dict of the summary (accuracies as fractions in [0, 1])."""
    def clean(x):
        return None if isinstance(x, float) and math.isnan(x) else x
    return {
        "sources": [{k: clean(v) for k, v in dataclasses.asdict(s).items()} for s in summary.sources],
        "group_means": {k: clean(v) for k, v in summary.group_means.items()},
        "benchmark_means": {k: clean(v) for k, v in summary.benchmark_means.items()},
        "overall": clean(summary.overall),
        "overall_definition": Summary.OVERALL_DEFINITION,
        "complete": summary.complete,
        "failed": list(summary.failed),
        "missing": list(summary.missing),
    }
