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
from typing import Iterator, Optional

from fewshot_bench.errors import DataError
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
  finished_at  REAL NOT NULL,
  versions     TEXT NOT NULL DEFAULT '{}',
  PRIMARY KEY (run_key, source, task_id)
);
"""


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


class ResultsDB:
    """A results database file (created on first use)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._conn = sqlite3.connect(str(self.path), timeout=60)
            self._conn.executescript(SCHEMA)
        except sqlite3.DatabaseError as e:
            raise DataError(f"results database {self.path} cannot be opened ({e}); "
                            "pass another --results path or move the damaged file away") from e

    def close(self) -> None:
        self._conn.close()

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
                "INSERT OR REPLACE INTO results VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (run.key, run.suite, row.benchmark, row.group, row.source, row.scoring, row.task_id,
                 run.learner, run.backbone, run.config_hash, run.seed, fingerprint, row.status, row.error,
                 row.correct, row.total, row.accuracy if row.total else None, seconds, time.time(),
                 json.dumps(versions or {}, sort_keys=True)))

    def rows(self, run: RunInfo) -> list[Row]:
        return list(self._iter_rows("WHERE run_key=?", (run.key,)))

    def _iter_rows(self, where: str, args: tuple) -> Iterator[Row]:
        cur = self._conn.execute(
            f"SELECT source, grp, benchmark, scoring, task_id, correct, total, status, error "
            f"FROM results {where} ORDER BY rowid", args)
        for source, group, benchmark, scoring, task_id, correct, total, status, error in cur:
            yield Row(source, group, benchmark, scoring, task_id, correct, total, status, error)
