"""Scoring rules of VTAB and Meta-Dataset, as pure functions over result rows.

- VTAB (Zhai et al. 2019): a task's score is its accuracy pooled over every
  query example (correct / total), never a mean of per-chunk accuracies. The
  VTAB score is the mean over tasks (task-weighted), reported beside the
  means of the natural / specialized / structured groups.
- Meta-Dataset (Triantafillou et al. 2020): a source's score is the mean of its
  per-episode accuracies, with the 95% interval ``1.96 * std / sqrt(n)`` where
  ``std`` is the population standard deviation of those accuracies.
- VTAB+MD (Dumoulin et al. 2021) reports both halves side by side.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Iterable, Mapping, Optional, Sequence

from fewshot_bench.tasks import EPISODES, POOLED


def pooled_accuracy(correct: Sequence[int], total: Sequence[int]) -> float:
    """VTAB rule: sum of correct over sum of examples, across all query chunks."""
    n = sum(total)
    if n == 0:
        raise ValueError("pooled_accuracy: no query examples")
    return sum(correct) / n


def mean_and_interval(accuracies: Sequence[float]) -> tuple[float, float]:
    """MD rule: mean of per-episode accuracies and 1.96 * population std / sqrt(n)."""
    n = len(accuracies)
    if n == 0:
        raise ValueError("mean_and_interval: no episodes")
    mean = sum(accuracies) / n
    std = math.sqrt(sum((a - mean) ** 2 for a in accuracies) / n)
    return mean, 1.96 * std / math.sqrt(n)


@dataclasses.dataclass(frozen=True)
class Row:
    """One finished (or failed) task, as the evaluator records it."""

    source: str
    group: str
    benchmark: str        # "vtab" or "md"
    scoring: str          # POOLED or EPISODES
    task_id: str
    correct: int
    total: int
    status: str = "ok"    # "ok" or "failed"
    error: str = ""
    fit_seconds: float = 0.0  # Learner.fit's time: building the task is not counted, decoding a lazy support set read in fit is

    @property
    def accuracy(self) -> float:
        return self.correct / self.total if self.total else float("nan")


@dataclasses.dataclass(frozen=True)
class SourceScore:
    source: str
    group: str
    benchmark: str
    scoring: str
    accuracy: float                  # in [0, 1]
    interval: Optional[float]        # MD: 95% half-width; VTAB: None
    num_tasks: int                   # tasks/episodes that finished
    num_failed: int
    expected: int                    # tasks/episodes the suite defines


@dataclasses.dataclass(frozen=True)
class Summary:
    sources: tuple[SourceScore, ...]
    group_means: Mapping[str, float]     # mean over the sources of each group
    benchmark_means: Mapping[str, float]  # "vtab": mean over VTAB tasks, "md": mean over MD sources
    overall: Optional[float]             # mean over all sources (task-weighted), None if incomplete
    complete: bool
    failed: tuple[str, ...]              # "source/task_id: error"
    missing: tuple[str, ...]             # sources with fewer finished tasks than expected

    OVERALL_DEFINITION = ("overall = unweighted mean over all sources: each VTAB task and each "
                          "MD source counts once (task-weighted, not a mean of group means)")


def score_source(rows: Sequence[Row], expected: int) -> SourceScore:
    """Score one source from its rows (failed rows are counted, never scored)."""
    first = rows[0]
    ok = [r for r in rows if r.status == "ok"]
    failed = len(rows) - len(ok)
    if not ok:
        acc, interval = float("nan"), None
    elif first.scoring == POOLED:
        acc, interval = pooled_accuracy([r.correct for r in ok], [r.total for r in ok]), None
    elif first.scoring == EPISODES:
        acc, interval = mean_and_interval([r.accuracy for r in ok])
    else:
        raise ValueError(f"unknown scoring rule {first.scoring!r} for source {first.source!r}")
    return SourceScore(first.source, first.group, first.benchmark, first.scoring, acc, interval,
                       len(ok), failed, expected)


def _mean(values: Iterable[float]) -> float:
    values = list(values)
    return sum(values) / len(values) if values else float("nan")


def summarize(rows: Iterable[Row], expected: Mapping[str, int], partial: bool = False) -> Summary:
    """Aggregate rows into per-source scores, group means and suite means.

    ``expected`` maps every source of the suite (in suite order) to its number
    of tasks. A source with missing or failed tasks makes the summary
    incomplete; summary means are then withheld unless ``partial`` is set.
    """
    by_source: dict[str, list[Row]] = {}
    for r in rows:
        by_source.setdefault(r.source, []).append(r)
    scores, missing = [], []
    for name, count in expected.items():
        source_rows = by_source.get(name, [])
        if source_rows:
            scores.append(score_source(source_rows, count))
        if sum(r.status == "ok" for r in source_rows) < count:
            missing.append(f"{name}: {sum(r.status == 'ok' for r in source_rows)}/{count} done")
    failed = tuple(f"{r.source}/{r.task_id}: {r.error}" for rs in by_source.values() for r in rs
                   if r.status != "ok")
    complete = not missing
    usable = [s for s in scores if s.num_tasks and (complete or partial)]
    groups: dict[str, list[float]] = {}
    benchmarks: dict[str, list[float]] = {}
    for s in usable:
        groups.setdefault(s.group, []).append(s.accuracy)
        benchmarks.setdefault(s.benchmark, []).append(s.accuracy)
    return Summary(
        sources=tuple(scores),
        group_means={g: _mean(v) for g, v in groups.items()},
        benchmark_means={b: _mean(v) for b, v in benchmarks.items()},
        overall=_mean(s.accuracy for s in usable) if usable else None,
        complete=complete,
        failed=failed,
        missing=tuple(missing),
    )
