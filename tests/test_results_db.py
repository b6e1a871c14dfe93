"""ResultsDB reading: recorded_runs() and read-only opening (the export reads results through these)."""

import sqlite3

import pytest

from fewshot_bench.errors import DataError
from fewshot_bench.evaluation.results import ResultsDB, RunInfo
from fewshot_bench.evaluation.scores import Row
from fewshot_bench.tasks import EPISODES, POOLED, Suite, TaskSource

A = RunInfo("mini", "toy", "toy@1", "a\n", 0, 32)
B = RunInfo("mini", "toy", "toy@1", "b\n", 1, 64)


def _row(source, task_id, correct, scoring=EPISODES):
    return Row(source, "md", "md", scoring, task_id, correct, 10, fit_seconds=0.5)


def test_recorded_runs_in_first_row_order_with_runs_table_facts(tmp_path):
    db = ResultsDB(tmp_path / "r.sqlite")
    never = RunInfo("mini", "toy", "toy@1", "never ran\n", 2, 16)
    db.start_run(never, Suite("mini", (TaskSource("fonts", "md", EPISODES, 9, None, "md"),)))
    db.start_run(A, Suite("mini", (TaskSource("fonts", "md", EPISODES, 3, None, "md"),
                                   TaskSource("digits", "natural", POOLED, 1, None))))
    db.record(B, _row("fonts", "0", 1), fingerprint="f", seconds=1.0, versions={"numpy": "1"})
    db.record(A, _row("fonts", "1", 2), fingerprint="f", seconds=1.0, versions={"numpy": "1"})
    db.record(A, _row("fonts", "0", 3), fingerprint="f", seconds=1.0, versions={"numpy": "2", "keras": None})
    db.record(B, _row("fonts", "1", 4), fingerprint="f", seconds=1.0, versions={"numpy": "3"})
    runs = db.recorded_runs()
    # B's first row came first; the run registered without rows is left out.
    assert [r.key for r in runs] == [B.key, A.key]
    b, a = runs
    assert (a.suite, a.learner, a.backbone, a.config_hash, a.seed) == ("mini", "toy", "toy@1", A.config_hash, 0)
    # A is in the runs table (32 px, 3 + 1 tasks); B never called start_run.
    assert (a.image_size, dict(a.expected)) == (32, {"fonts": 3, "digits": 1})
    assert (b.image_size, dict(b.expected)) == (None, {})
    # Versions are those of each run's latest row.
    assert dict(a.versions) == {"keras": None, "numpy": "2"} and dict(b.versions) == {"numpy": "3"}
    # rows() takes a recorded run like a RunInfo: source then episode order, whatever the finishing order.
    assert [(r.task_id, r.correct) for r in db.rows(a)] == [("0", 3), ("1", 2)] == \
        [(r.task_id, r.correct) for r in db.rows(A)]
    db.close()


def test_read_only_refuses_missing_and_foreign_files_without_touching_them(tmp_path):
    missing = tmp_path / "none" / "r.sqlite"
    with pytest.raises(DataError, match=r"r.sqlite does not exist; pass the file written by .*--results"):
        ResultsDB(missing, read_only=True)
    assert not missing.parent.exists()

    other = tmp_path / "other.sqlite"
    with sqlite3.connect(other) as conn:
        conn.execute("CREATE TABLE other (x)")
    with pytest.raises(DataError, match=r"other.sqlite is not a fewshot-bench results database \(no results table\)"):
        ResultsDB(other, read_only=True)
    with sqlite3.connect(other) as conn:
        assert [n for (n,) in conn.execute("SELECT name FROM sqlite_master")] == ["other"]

    partial = tmp_path / "partial.sqlite"
    with sqlite3.connect(partial) as conn:
        conn.execute("CREATE TABLE results (run_key, suite, source, task_id)")
    with pytest.raises(DataError, match=r"results table lacks benchmark, grp, scoring, learner, backbone, "
                                        r"config_hash, seed, status, error, correct, total, versions\)"):
        ResultsDB(partial, read_only=True)

    text = tmp_path / "text.sqlite"
    text.write_bytes(b"not a database at all" * 50)
    with pytest.raises(DataError, match="text.sqlite is not a fewshot-bench results database"):
        ResultsDB(text, read_only=True)


def test_read_only_reads_files_older_than_fit_seconds_and_the_runs_table(tmp_path):
    path = tmp_path / "old.sqlite"
    columns = ("run_key, suite, benchmark, grp, source, scoring, task_id, learner, backbone, config_hash, seed, "
               "fingerprint, status, error, correct, total, accuracy, seconds, finished_at, versions")
    with sqlite3.connect(path) as conn:
        conn.execute(f"CREATE TABLE results ({columns})")
        for task_id, correct in (("10", 7), ("2", 5)):
            conn.execute(f"INSERT INTO results ({columns}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                         (A.key, "mini", "md", "md", "fonts", EPISODES, task_id, "toy", "toy@1", A.config_hash, 0,
                          "f", "ok", "", correct, 10, correct / 10, 1.0, 0.0, "not json"))
    db = ResultsDB(path, read_only=True)
    (run,) = db.recorded_runs()
    assert (run.key, run.image_size, dict(run.expected), dict(run.versions)) == (A.key, None, {}, {})
    assert db.rows(run) == [Row("fonts", "md", "md", EPISODES, "2", 5, 10, "ok", "", 0),
                            Row("fonts", "md", "md", EPISODES, "10", 7, 10, "ok", "", 0)]
    db.close()


def test_status_never_writes_into_the_file_it_reads(tmp_path, capsys):
    from fewshot_bench.cli import main

    other = tmp_path / "other.sqlite"
    with sqlite3.connect(other) as conn:
        conn.execute("CREATE TABLE notes (x TEXT)")
    before = other.read_bytes()
    assert main(["status", "--results", str(other)]) != 0
    assert "not a fewshot-bench results database" in capsys.readouterr().err
    assert other.read_bytes() == before  # no results schema slipped into somebody else's file

    db = ResultsDB(tmp_path / "r.sqlite")
    db.start_run(A, Suite("mini", (TaskSource("fonts", "md", EPISODES, 3, None, "md"),)))
    db.record(A, _row("fonts", "0", 3), fingerprint="f", seconds=1.0)
    db.close()
    assert main(["status", "--results", str(tmp_path / "r.sqlite")]) == 0
    assert "done    1  failed   0  pending    2" in capsys.readouterr().out


@pytest.mark.parametrize("package", ["fewshot-bench", "numpy"])
def test_resuming_across_a_version_change_is_refused_naming_it(tmp_path, package):
    from fewshot_bench.errors import ConfigError

    suite = Suite("mini", (TaskSource("fonts", "md", EPISODES, 3, None, "md"),))
    db = ResultsDB(tmp_path / "r.sqlite")
    db.start_run(A, suite, versions={"fewshot-bench": "0.1.0", "numpy": "1.26"})
    db.start_run(A, suite, versions={"fewshot-bench": "0.1.0", "numpy": "1.26", "git_commit": "other"})  # same
    changed = {"fewshot-bench": "0.1.0", "numpy": "1.26", package: "9.9"}
    with pytest.raises(ConfigError, match=f"{package}: .* -> 9.9.*--allow_version_change"):
        db.start_run(A, suite, versions=changed)
    db.start_run(A, suite, versions=changed, allow_version_change=True)  # knowingly
