"""Export runs of a results database as submissions.

Each run (suite, learner, backbone, configuration, seed) becomes one
submission. Its figures come from :func:`fewshot_bench.evaluation.scores.summarize`,
so they follow the evaluator's scoring rules exactly: VTAB tasks pooled over
their query examples, MD sources as mean ± 1.96·std/√n over episodes. A source
with a failed or unfinished task is left out (and named under
``provenance.incomplete``); the tasks a run expects and its image size come
from the database's ``runs`` table where it has one.
"""

from __future__ import annotations

from collections import Counter
from contextlib import closing
from pathlib import Path
from typing import Mapping, Optional

from fewshot_bench.evaluation.results import ResultsDB
from fewshot_bench.evaluation.scores import Row, summarize
from fewshot_bench.leaderboard.protocols import PROTOCOLS, protocol_parts
from fewshot_bench.leaderboard.submission import Figure, Submission, from_dict
from fewshot_bench.tasks import EPISODES

SQLITE_MAGIC = b"SQLite format 3\x00"


def is_results_db(path: str | Path) -> bool:
    """Whether ``path`` is an SQLite file (the results database format)."""
    try:
        with open(path, "rb") as f:
            return f.read(len(SQLITE_MAGIC)) == SQLITE_MAGIC
    except OSError:
        return False


def export_runs(path: str | Path, *, method: Optional[str] = None, pretraining_data: str = "not stated",
                image_size: Optional[int] = None, run_keys: Optional[set[str]] = None,
                config_hashes: Optional[set[str]] = None) -> tuple[list[Submission], list[str]]:
    """Submissions for the runs of a results database, and notes on runs left out.

    ``method`` defaults to the learner name, followed by the seed and
    configuration hash where several runs of one learner and backbone would
    otherwise share a name. ``image_size`` defaults to the one the run
    recorded. Runs of suites that are no protocol (test suites) are left out
    with a note; so are runs with no finished source.
    """
    path = Path(path)
    with closing(ResultsDB(path, read_only=True)) as db:
        runs = [r for r in db.recorded_runs() if (run_keys is None or r.key in run_keys)
                and (config_hashes is None or r.config_hash in config_hashes)]
        names = Counter((r.suite, r.learner, r.backbone) for r in runs)
        submissions, notes = [], []
        for run in runs:
            if run.suite not in PROTOCOLS:
                notes.append(f"{path} run {run.key}: suite {run.suite!r} is not a protocol "
                             f"({', '.join(PROTOCOLS)}); left out")
                continue
            name = method or run.learner
            if method is None and names[(run.suite, run.learner, run.backbone)] > 1:
                name = f"{run.learner} (seed {run.seed}, config {run.config_hash})"
            submission, incomplete = _submission(
                db.rows(run), run.suite, name, run.backbone, pretraining_data, image_size or run.image_size,
                run.expected,
                {"kind": "results-db", "database": path.name, "run_key": run.key, "suite": run.suite,
                 "learner": run.learner, "backbone_id": run.backbone, "config_hash": run.config_hash,
                 "seed": run.seed, "versions": _versions(run.versions)}, origin=f"{path} run {run.key}")
            if submission is None:
                notes.append(f"{path} run {run.key}: no source finished without failures; left out")
            else:
                submissions.append(submission)
                notes += [f"{path} run {run.key}: {m}" for m in incomplete]
        return submissions, notes


def _versions(versions: Mapping[str, object]) -> dict[str, Optional[str]]:
    """Package versions as a submission carries them: strings of at most 100 characters."""
    return {str(k)[:100]: (None if v is None else str(v)[:100]) for k, v in versions.items()}


def _submission(rows: list[Row], protocol: str, method: str, backbone_id: str, pretraining_data: str,
                image_size: Optional[int], recorded: Mapping[str, int], provenance: dict,
                origin: str) -> tuple[Optional[Submission], list[str]]:
    """One run's submission; a source is expected to have the tasks the run recorded, else those it has."""
    counts: dict[str, int] = {}
    for r in rows:
        counts[r.source] = counts.get(r.source, 0) + 1
    expected = {s.name: recorded.get(s.name, counts.get(s.name, 1))
                for sources in protocol_parts(protocol).values() for s in sources}
    summary = summarize(rows, expected, partial=True)
    figures, incomplete = [], list(summary.missing)
    for s in summary.sources:
        if s.num_failed or s.num_tasks < s.expected:
            continue
        if s.scoring == EPISODES:
            figures.append(Figure(s.source, round(100 * s.accuracy, 4), round(100 * s.interval, 4), s.num_tasks))
        else:
            figures.append(Figure(s.source, round(100 * s.accuracy, 4)))
    if not figures:
        return None, incomplete
    if incomplete:
        provenance = dict(provenance, incomplete=incomplete)
    submission = Submission(method, backbone_id.split("@")[0], pretraining_data, image_size, protocol,
                            tuple(figures), provenance, origin=origin)
    # The export goes through the same validation as any file.
    return from_dict(submission.to_dict(), origin), incomplete
