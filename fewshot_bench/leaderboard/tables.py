"""The tables of a leaderboard, computed from submissions (rendering lives in ``render``).

- MD table, per protocol version: per source ``accuracy ± interval (rank)``
  and the average rank (:mod:`fewshot_bench.leaderboard.ranking`).
- VTAB table, per protocol version: per task accuracy, the natural /
  specialized / structured means and the mean over tasks.
- VTAB+MD summary, per pair of versions: for each method with both halves,
  its VTAB group means and mean, MD mean and average rank, and the overall mean.

The means follow :class:`fewshot_bench.evaluation.scores.Summary`: a group mean
is the mean over the group's tasks, the VTAB mean is the mean over tasks (not
over group means), the MD mean is the mean over sources, and the overall mean
is the mean over every task and source. A mean needs every figure it covers.

One table never holds two versions of a protocol (say MD-v1 and MD-v2 rows)
unless ``mix_protocols`` is set; :func:`build_board` gives each version its
own table.
"""

from __future__ import annotations

import dataclasses
from typing import Iterable, Optional, Sequence

from fewshot_bench.errors import ConfigError
from fewshot_bench.leaderboard.protocols import MD, PROTOCOLS, VTAB, VTAB_GROUPS, SourceInfo, part_sources
from fewshot_bench.leaderboard.ranking import Estimate, average_rank, rank_source, tied_with_best
from fewshot_bench.leaderboard.submission import Figure, Submission

MIXED = "mixed"


def _mean(values: Sequence[Optional[float]]) -> Optional[float]:
    if not values or any(v is None for v in values):
        return None
    return sum(values) / len(values)


@dataclasses.dataclass(frozen=True)
class MdRow:
    submission: Submission
    version: str
    cells: dict[str, Figure]
    ranks: dict[str, float]                   # source -> rank on that source
    best: frozenset[str]                      # sources where it ties with the best
    average_rank: Optional[float]
    mean: Optional[float]


@dataclasses.dataclass(frozen=True)
class MdTable:
    version: str                              # a protocol version, or MIXED
    sources: tuple[SourceInfo, ...]
    rows: tuple[MdRow, ...]


@dataclasses.dataclass(frozen=True)
class VtabRow:
    submission: Submission
    version: str
    cells: dict[str, float]                   # task -> accuracy (%)
    group_means: dict[str, Optional[float]]
    mean: Optional[float]
    reported: frozenset[str]                  # group names (and "mean") taken from reported_means


@dataclasses.dataclass(frozen=True)
class VtabTable:
    version: str
    sources: tuple[SourceInfo, ...]
    rows: tuple[VtabRow, ...]


@dataclasses.dataclass(frozen=True)
class SummaryRow:
    vtab: VtabRow
    md: MdRow
    overall: Optional[float]


@dataclasses.dataclass(frozen=True)
class SummaryTable:
    vtab_version: str
    md_version: str
    rows: tuple[SummaryRow, ...]


@dataclasses.dataclass(frozen=True)
class Board:
    md_tables: tuple[MdTable, ...]
    vtab_tables: tuple[VtabTable, ...]
    summary_tables: tuple[SummaryTable, ...]
    submissions: tuple[Submission, ...]
    notes: tuple[str, ...] = ()


def _check_versions(kind: str, versions: set[str], mix_protocols: bool) -> str:
    if len(versions) > 1 and not mix_protocols:
        raise ConfigError(f"one {kind} table cannot rank results of different protocol versions "
                          f"({', '.join(sorted(versions))}): their tasks or episodes differ. Report them "
                          "separately, or pass --mix_protocols to put them in one table anyway")
    return versions.pop() if len(versions) == 1 else MIXED


def _check_unique(kind: str, subs: Iterable[Submission]) -> None:
    seen: dict[tuple, Submission] = {}
    for s in subs:
        if s.identity in seen:
            raise ConfigError(f"{kind} table: {seen[s.identity].origin} and {s.origin} both describe method "
                              f"{s.method!r} (backbone {s.backbone!r}, pretraining {s.pretraining_data!r}, "
                              f"image size {s.image_size}); give one of them another 'method' name")
        seen[s.identity] = s


def _columns(benchmark: str, versions: Iterable[str]) -> tuple[SourceInfo, ...]:
    columns: dict[str, SourceInfo] = {}
    for version in sorted(versions):
        for s in part_sources(benchmark, version):
            columns.setdefault(s.name, s)
    return tuple(columns.values())


def md_table(parts: Sequence[tuple[str, Submission]], mix_protocols: bool = False) -> MdTable:
    """Rank MD figures; ``parts`` are ``(version, submission)`` pairs."""
    version = _check_versions("MD", {v for v, _ in parts}, mix_protocols)
    _check_unique("MD", (s for _, s in parts))
    sources = _columns(MD, {v for v, _ in parts})
    figures = [s.figures(MD) for _, s in parts]
    ranks: list[dict[str, float]] = [{} for _ in parts]
    best: list[set[str]] = [set() for _ in parts]
    for source in sources:
        having = [i for i, f in enumerate(figures) if source.name in f]
        estimates = [Estimate(figures[i][source.name].accuracy_pct, figures[i][source.name].ci95_pct,
                              figures[i][source.name].episodes) for i in having]
        for i, r, tied in zip(having, rank_source(estimates), tied_with_best(estimates)):
            ranks[i][source.name] = r
            if tied:
                best[i].add(source.name)
    rows = []
    for (v, sub), figs, rk, bs in zip(parts, figures, ranks, best):
        own = [s.name for s in part_sources(MD, v)]
        rows.append(MdRow(sub, v, figs, rk, frozenset(bs), average_rank([rk.get(name) for name in own]),
                          _mean([figs[name].accuracy_pct if name in figs else None for name in own])))
    rows.sort(key=lambda r: (r.average_rank is None, r.average_rank or 0.0, r.submission.method))
    return MdTable(version, sources, tuple(rows))


def vtab_row(version: str, sub: Submission) -> VtabRow:
    """Per-task accuracies and means of one submission's VTAB half."""
    figs = sub.figures(VTAB)
    tasks = part_sources(VTAB, version)
    cells = {name: f.accuracy_pct for name, f in figs.items()}
    reported = set()
    groups: dict[str, Optional[float]] = {}
    for group in VTAB_GROUPS:
        members = [cells.get(t.name) for t in tasks if t.group == group]
        if not members:
            continue
        groups[group] = _mean(members)
        if groups[group] is None and group in sub.reported_means:
            groups[group] = sub.reported_means[group]
            reported.add(group)
    mean = _mean([cells.get(t.name) for t in tasks])
    if mean is None and "mean" in sub.reported_means:
        mean = sub.reported_means["mean"]
        reported.add("mean")
    return VtabRow(sub, version, cells, groups, mean, frozenset(reported))


def vtab_table(parts: Sequence[tuple[str, Submission]], mix_protocols: bool = False) -> VtabTable:
    """Per-task accuracies and means; ``parts`` are ``(version, submission)`` pairs."""
    version = _check_versions("VTAB", {v for v, _ in parts}, mix_protocols)
    _check_unique("VTAB", (s for _, s in parts))
    rows = [vtab_row(v, s) for v, s in parts]
    rows.sort(key=lambda r: (r.mean is None, -(r.mean or 0.0), r.submission.method))
    return VtabTable(version, _columns(VTAB, {v for v, _ in parts}), tuple(rows))


def _overall(vtab: VtabRow, md: MdRow) -> Optional[float]:
    values = [vtab.cells.get(t.name) for t in part_sources(VTAB, vtab.version)]
    values += [md.cells[s.name].accuracy_pct if s.name in md.cells else None for s in part_sources(MD, md.version)]
    return _mean(values)


def _parts(submissions: Sequence[Submission], keep: Optional[set[str]]) -> dict[str, list[tuple[str, Submission]]]:
    parts: dict[str, list[tuple[str, Submission]]] = {VTAB: [], MD: []}
    for sub in submissions:
        for benchmark, version in PROTOCOLS[sub.protocol].items():
            if keep is not None and version not in keep:
                continue
            if sub.figures(benchmark) or (benchmark == VTAB and sub.reported_means):
                parts[benchmark].append((version, sub))
    return parts


def expand_protocols(names: Optional[Iterable[str]]) -> Optional[set[str]]:
    """Protocol names (``vtab+md``) or versions (``md-v2``) -> the set of part versions they select."""
    if names is None:
        return None
    keep = set()
    for name in names:
        if name not in PROTOCOLS:
            raise ConfigError(f"--protocol {name!r}: unknown; choose among {', '.join(PROTOCOLS)}")
        keep.update(PROTOCOLS[name].values())
    return keep


def build_board(submissions: Sequence[Submission], *, mix_protocols: bool = False,
                protocols: Optional[Iterable[str]] = None, notes: Sequence[str] = ()) -> Board:
    """Every table for ``submissions``: one per protocol version (or per benchmark if mixing)."""
    parts = _parts(submissions, expand_protocols(protocols))

    def grouped(benchmark: str) -> list[list[tuple[str, Submission]]]:
        if mix_protocols:
            return [parts[benchmark]] if parts[benchmark] else []
        versions = sorted({v for v, _ in parts[benchmark]})
        return [[p for p in parts[benchmark] if p[0] == v] for v in versions]

    md_tables = tuple(md_table(g, mix_protocols) for g in grouped(MD))
    vtab_tables = tuple(vtab_table(g, mix_protocols) for g in grouped(VTAB))
    summaries: dict[tuple[str, str], list[SummaryRow]] = {}
    for vt in vtab_tables:
        for vrow in vt.rows:
            for mt in md_tables:
                for mrow in mt.rows:
                    if mrow.submission.identity != vrow.submission.identity:
                        continue
                    key = (vt.version, mt.version)
                    summaries.setdefault(key, []).append(SummaryRow(vrow, mrow, _overall(vrow, mrow)))
    summary_tables = []
    for (vv, mv), rows in sorted(summaries.items()):
        rows.sort(key=lambda r: (r.overall is None, -(r.overall or 0.0), r.vtab.submission.method))
        summary_tables.append(SummaryTable(vv, mv, tuple(rows)))
    return Board(md_tables, vtab_tables, tuple(summary_tables), tuple(submissions), tuple(notes))
