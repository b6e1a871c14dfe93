"""The results database: one SQLite row per finished task or episode.

Each row is committed in its own transaction the moment its task ends, so an
interrupted run loses at most the tasks in flight. Rows are keyed by
(run key, source, task id); a run key identifies suite, learner, backbone,
configuration and seed, so re-running the same command finds its finished work.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import sqlite3
import time
from pathlib import Path
from typing import Iterator, Mapping, Optional

from fewshot_bench.errors import ConfigError, DataError
from fewshot_bench.evaluation.scores import Row

SCHEMA = """
CREATE TABLE IF NOT EXISTS results (
  run_key      TEXT NOT NULL,
  suite        TEXT NOT NULL,
  benchmark    TEXT NOT NULL,
  grp          TEXT NOT NULL,
  source       TEXT NOT NULL,
  scoring      TEXT NOT NULL,
  task_id      TEXT NOT NULL,
  learner      TEXT NOT NULL,
  backbone     TEXT NOT NULL,
  config_hash  TEXT NOT NULL,
  seed         INTEGER NOT NULL,
  fingerprint  TEXT NOT NULL,
  status       TEXT NOT NULL,
  error        TEXT NOT NULL DEFAULT '',
  correct      INTEGER NOT NULL,
  total        INTEGER NOT NULL,
  accuracy     REAL,
  seconds      REAL NOT NULL,
  fit_seconds  REAL NOT NULL DEFAULT 0,
  finished_at  REAL NOT NULL,
  versions     TEXT NOT NULL DEFAULT '{}',
  PRIMARY KEY (run_key, source, task_id)
);
CREATE TABLE IF NOT EXISTS runs (
  run_key      TEXT PRIMARY KEY,
  suite        TEXT NOT NULL,
  learner      TEXT NOT NULL,
  backbone     TEXT NOT NULL,
  config       TEXT NOT NULL,
  config_hash  TEXT NOT NULL,
  seed         INTEGER NOT NULL,
  image_size   INTEGER NOT NULL,
  expected     TEXT NOT NULL,
  versions     TEXT NOT NULL,
  started_at   REAL NOT NULL
);
"""

# Versions whose change makes earlier rows of a run incomparable with new ones.
# fewshot-bench itself: a release that changes a protocol rule (e.g. what BiT-HyperRule reads of a
# task) bumps its version, so a run is never resumed across such a change.
RESULT_SHAPING_PACKAGES = ("fewshot-bench", "tensorflow", "keras", "scikit-learn", "numpy")

# The columns a file must have to be read; files older than fit_seconds read it as 0,
# files older than the runs table have no image size or expected task counts.
READ_COLUMNS = ("run_key", "suite", "benchmark", "grp", "source", "scoring", "task_id", "learner", "backbone",
                "config_hash", "seed", "status", "error", "correct", "total", "versions")
NOT_RESULTS_HINT = "pass the file written by `fewshot-bench evaluate --results`"


@dataclasses.dataclass(frozen=True)
class RunInfo:
    """What identifies one evaluation run (everything that changes its scores)."""

    suite: str
    learner: str
    backbone: str        # backbone id: name@weights hash
    config: str          # the learner/gin configuration text
    seed: int
    image_size: int

    @property
    def config_hash(self) -> str:
        return hashlib.sha256(f"{self.config}\nimage_size={self.image_size}".encode()).hexdigest()[:12]

    @property
    def key(self) -> str:
        text = json.dumps([self.suite, self.learner, self.backbone, self.config_hash, self.seed])
        return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclasses.dataclass(frozen=True)
class RecordedRun:
    """A run as the database holds it: its identity from its result rows, the rest from the runs table."""

    key: str
    suite: str
    learner: str
    backbone: str
    config_hash: str
    seed: int
    versions: Mapping[str, object]     # package versions of the run's latest row
    image_size: Optional[int]          # None where the file has no runs table (older files)
    expected: Mapping[str, int]        # tasks per source the run registered; {} where unknown


def _json_object(text) -> dict:
    """The JSON object a text column holds; {} for anything else (a damaged or hand-edited file)."""
    try:
        value = json.loads(text)
    except (TypeError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def _task_counts(text) -> dict[str, int]:
    """``source -> number of tasks`` from the runs table's ``expected`` column; {} if unreadable."""
    try:
        return {str(k): int(v) for k, v in _json_object(text).items()}
    except (TypeError, ValueError):
        return {}


class ResultsDB:
    """A results database file (created on first use, unless opened ``read_only``).

    ``read_only`` opens an existing file without changing it, and accepts files
    written by earlier versions (see ``READ_COLUMNS``); the file must exist and
    hold a results table, else :class:`DataError` names it.
    """

    def __init__(self, path: str | Path, *, read_only: bool = False):
        self.path = Path(path)
        self._fit_seconds = "fit_seconds"   # SQL for the column (0 in files older than it)
        self._has_runs_table = True
        if read_only:
            self._conn = self._open_read_only()
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._conn = sqlite3.connect(str(self.path), timeout=60)
            self._conn.executescript(SCHEMA)
        except sqlite3.DatabaseError as e:
            raise DataError(f"results database {self.path} cannot be opened ({e}); "
                            "pass another --results path or move the damaged file away") from e

    def _open_read_only(self) -> sqlite3.Connection:
        if not self.path.is_file():
            raise DataError(f"results database {self.path} does not exist; {NOT_RESULTS_HINT}")
        conn = sqlite3.connect(f"{self.path.resolve().as_uri()}?mode=ro", uri=True)
        try:
            columns = {row[1] for row in conn.execute("PRAGMA table_info(results)")}
            tables = {name for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        except sqlite3.DatabaseError as e:
            conn.close()
            raise DataError(f"{self.path} is not a fewshot-bench results database ({e}); {NOT_RESULTS_HINT}") from e
        lacking = [c for c in READ_COLUMNS if c not in columns]
        if lacking:
            conn.close()
            why = "no results table" if not columns else f"its results table lacks {', '.join(lacking)}"
            raise DataError(f"{self.path} is not a fewshot-bench results database ({why}); {NOT_RESULTS_HINT}")
        self._fit_seconds = "fit_seconds" if "fit_seconds" in columns else "0"
        self._has_runs_table = "runs" in tables
        return conn

    def close(self) -> None:
        self._conn.close()

    def start_run(self, run: RunInfo, suite, versions: Optional[dict] = None,
                  allow_version_change: bool = False) -> None:
        """Register the run (its expected tasks, config and versions) before work starts.

        Resuming a run whose rows were made with other versions of the packages
        that shape results is refused, naming the differences: rows of two
        environments are never silently mixed into one score.
        """
        versions = versions or {}
        old = self._conn.execute("SELECT versions FROM runs WHERE run_key=?", (run.key,)).fetchone()
        if old is not None:
            before = json.loads(old[0])
            diff = {k: (before.get(k), versions.get(k)) for k in RESULT_SHAPING_PACKAGES
                    if versions and before.get(k) != versions.get(k)}
            if diff and not allow_version_change:
                shown = ", ".join(f"{k}: {a} -> {b}" for k, (a, b) in diff.items())
                raise ConfigError(f"results database {self.path} holds part of this run made with other "
                                  f"package versions ({shown}); use another --results path, or pass "
                                  f"--allow_version_change to mix them knowingly")
            return
        expected = {s.name: s.num_tasks for s in suite.sources}
        with self._conn:
            self._conn.execute("INSERT INTO runs VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                               (run.key, run.suite, run.learner, run.backbone, run.config, run.config_hash,
                                run.seed, run.image_size, json.dumps(expected), json.dumps(versions, sort_keys=True),
                                time.time()))

    def runs(self) -> list[dict]:
        """Every registered run with its done / failed / pending counts per source (none in pre-``runs`` files)."""
        out = []
        if not self._has_runs_table:
            return out
        for key, suite, learner, backbone, config_hash, seed, image_size, expected in self._conn.execute(
                "SELECT run_key, suite, learner, backbone, config_hash, seed, image_size, expected "
                "FROM runs ORDER BY started_at"):
            counts = dict(((src, status), n) for src, status, n in self._conn.execute(
                "SELECT source, status, COUNT(*) FROM results WHERE run_key=? GROUP BY source, status", (key,)))
            sources = {name: {"done": counts.get((name, "ok"), 0), "failed": counts.get((name, "failed"), 0),
                              "expected": n} for name, n in _task_counts(expected).items()}
            for part in sources.values():
                part["pending"] = part["expected"] - part["done"] - part["failed"]
            out.append({"run_key": key, "suite": suite, "learner": learner, "backbone": backbone,
                        "config_hash": config_hash, "seed": seed, "image_size": image_size, "sources": sources})
        return out

    def recorded_runs(self) -> list[RecordedRun]:
        """Every run that has result rows, in the order of its first row (runs with no row are left out)."""
        registered: dict[str, tuple[int, dict[str, int]]] = {}
        if self._has_runs_table:
            registered = {key: (int(size), _task_counts(expected)) for key, size, expected in
                          self._conn.execute("SELECT run_key, image_size, expected FROM runs")}
        out = []
        for key, suite, learner, backbone, config_hash, seed, versions in self._conn.execute(
                "SELECT run_key, suite, learner, backbone, config_hash, seed, "
                "(SELECT versions FROM results AS last WHERE last.run_key = first.run_key "
                "ORDER BY rowid DESC LIMIT 1) "
                "FROM results AS first GROUP BY run_key ORDER BY MIN(rowid)"):
            size, expected = registered.get(key, (None, {}))
            out.append(RecordedRun(key, suite, learner, backbone, config_hash, seed, _json_object(versions),
                                   size, expected))
        return out

    def finished(self, run: RunInfo) -> set[tuple[str, str]]:
        """(source, task_id) of the run's tasks that finished successfully."""
        cur = self._conn.execute("SELECT source, task_id FROM results WHERE run_key=? AND status='ok'",
                                 (run.key,))
        return set(cur.fetchall())

    def record(self, run: RunInfo, row: Row, *, fingerprint: str, seconds: float,
               versions: Optional[dict] = None) -> None:
        """Write one task's row in its own transaction (replacing an earlier failure)."""
        with self._conn:
            self._conn.execute(
                "INSERT OR REPLACE INTO results VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (run.key, run.suite, row.benchmark, row.group, row.source, row.scoring, row.task_id,
                 run.learner, run.backbone, run.config_hash, run.seed, fingerprint, row.status, row.error,
                 row.correct, row.total, row.accuracy if row.total else None, seconds, row.fit_seconds, time.time(),
                 json.dumps(versions or {}, sort_keys=True)))

    def rows(self, run: RunInfo | RecordedRun) -> list[Row]:
        """The run's rows in a fixed order (source, then episode index), whatever the finishing order."""
        return list(self._iter_rows("WHERE run_key=?", (run.key,)))

    def _iter_rows(self, where: str, args: tuple) -> Iterator[Row]:
        cur = self._conn.execute(
            f"SELECT source, grp, benchmark, scoring, task_id, correct, total, status, error, {self._fit_seconds} "
            f"FROM results {where} ORDER BY source, CAST(task_id AS INTEGER), task_id", args)
        for source, group, benchmark, scoring, task_id, correct, total, status, error, fit_seconds in cur:
            yield Row(source, group, benchmark, scoring, task_id, correct, total, status, error, fit_seconds)
