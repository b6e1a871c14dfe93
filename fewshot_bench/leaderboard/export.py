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

import json
import sqlite3
from pathlib import Path
from typing import Optional

from fewshot_bench.errors import DataError
from fewshot_bench.evaluation.scores import Row, summarize
from fewshot_bench.leaderboard.protocols import PROTOCOLS, protocol_parts
from fewshot_bench.leaderboard.submission import Figure, Submission, from_dict
from fewshot_bench.tasks import EPISODES

SQLITE_MAGIC = b"SQLite format 3\x00"
RUN_COLUMNS = "run_key, suite, learner, backbone, config_hash, seed"


def is_results_db(path: str | Path) -> bool:
    """Whether ``path`` is an SQLite file (the results database format)."""
    try:
        with open(path, "rb") as f:
            return f.read(len(SQLITE_MAGIC)) == SQLITE_MAGIC
    except OSError:
        return False


def _connect(path: Path) -> sqlite3.Connection:
    if not path.is_file():
        raise DataError(f"results database {path} does not exist")
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        conn.execute(f"SELECT {RUN_COLUMNS}, grp, benchmark, scoring, task_id, correct, total, status, error, "
                     "versions FROM results LIMIT 1")
    except sqlite3.DatabaseError as e:
        conn.close()
        raise DataError(f"{path} is not a fewshot-bench results database ({e}); "
                        "pass the file written by `fewshot-bench evaluate --results`") from e
    return conn


def _run_records(conn: sqlite3.Connection) -> dict[str, tuple[int, dict[str, int]]]:
    """``run_key -> (image_size, expected tasks per source)`` from the ``runs`` table (absent in old files)."""
    if not conn.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='runs'").fetchone():
        return {}
    records = {}
    for key, image_size, expected in conn.execute("SELECT run_key, image_size, expected FROM runs"):
        try:
            counts = {str(k): int(v) for k, v in json.loads(expected).items()}
        except (ValueError, TypeError, AttributeError):
            counts = {}
        records[key] = (int(image_size), counts)
    return records


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
    conn = _connect(path)
    try:
        records = _run_records(conn)
        runs = conn.execute(f"SELECT DISTINCT {RUN_COLUMNS} FROM results ORDER BY rowid").fetchall()
        runs = [r for r in dict.fromkeys(runs)
                if (run_keys is None or r[0] in run_keys) and (config_hashes is None or r[4] in config_hashes)]
        names: dict[tuple[str, str, str], int] = {}
        for _, suite, learner, backbone, _, _ in runs:
            names[(suite, learner, backbone)] = names.get((suite, learner, backbone), 0) + 1
        submissions, notes = [], []
        for run_key, suite, learner, backbone, config_hash, seed in runs:
            if suite not in PROTOCOLS:
                notes.append(f"{path} run {run_key}: suite {suite!r} is not a protocol "
                             f"({', '.join(PROTOCOLS)}); left out")
                continue
            rows = conn.execute("SELECT source, grp, benchmark, scoring, task_id, correct, total, status, error "
                                "FROM results WHERE run_key=? ORDER BY rowid", (run_key,)).fetchall()
            (versions,) = conn.execute("SELECT versions FROM results WHERE run_key=? ORDER BY rowid DESC LIMIT 1",
                                       (run_key,)).fetchone()
            name = method or learner
            if method is None and names[(suite, learner, backbone)] > 1:
                name = f"{learner} (seed {seed}, config {config_hash})"
            size, expected = records.get(run_key, (None, {}))
            submission, incomplete = _submission(
                [Row(*r) for r in rows], suite, name, backbone, pretraining_data, image_size or size, expected,
                {"kind": "results-db", "database": path.name, "run_key": run_key, "suite": suite,
                 "learner": learner, "backbone_id": backbone, "config_hash": config_hash, "seed": seed,
                 "versions": _versions(versions)}, origin=f"{path} run {run_key}")
            if submission is None:
                notes.append(f"{path} run {run_key}: no source finished without failures; left out")
            else:
                submissions.append(submission)
                notes += [f"{path} run {run_key}: {m}" for m in incomplete]
        return submissions, notes
    finally:
        conn.close()


def _versions(text: str) -> dict[str, Optional[str]]:
    try:
        versions = json.loads(text)
    except json.JSONDecodeError:
        return {}
    return {str(k)[:100]: (None if v is None else str(v)[:100]) for k, v in versions.items()} \
        if isinstance(versions, dict) else {}


def _submission(rows: list[Row], protocol: str, method: str, backbone_id: str, pretraining_data: str,
                image_size: Optional[int], recorded: dict[str, int], provenance: dict,
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
