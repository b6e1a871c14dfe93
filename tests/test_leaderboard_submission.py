"""Submission format: field-level validation of untrusted files, and export from a results database."""

import copy
import json
from pathlib import Path

import pytest

from fewshot_bench.errors import DataError
from fewshot_bench.evaluation.results import ResultsDB, RunInfo
from fewshot_bench.evaluation.scores import Row
from fewshot_bench.leaderboard.export import export_runs
from fewshot_bench.leaderboard.submission import from_dict, read_submissions, write_submissions
from fewshot_bench.tasks import EPISODES, POOLED

REPO = Path(__file__).resolve().parents[1]

GOOD = {
    "format": "fewshot-bench-submission/1",
    "method": "ProtoNet",
    "backbone": "ResNet-18",
    "pretraining_data": "ILSVRC-2012",
    "image_size": 126,
    "protocol": "md-v2",
    "results": [{"source": "aircraft", "accuracy_pct": 55.5, "ci95_pct": 0.9, "episodes": 600},
                {"source": "omniglot", "accuracy_pct": 70.25, "ci95_pct": 1.1, "episodes": 600}],
    "provenance": {"kind": "paper", "citation": "A. Author, A Paper, 2024", "table": "Table 2",
                   "url": "https://example.org/paper.pdf"},
}


def _error(doc) -> str:
    with pytest.raises(DataError) as info:
        from_dict(doc, "sub.json")
    return str(info.value)


def test_a_valid_submission_round_trips(tmp_path):
    sub = from_dict(copy.deepcopy(GOOD), "sub.json")
    assert sub.method == "ProtoNet" and sub.protocol == "md-v2"
    assert sub.figures("md")["aircraft"].ci95_pct == 0.9
    assert sub.figures("vtab") == {}
    write_submissions(tmp_path / "one.json", [sub])
    assert json.loads((tmp_path / "one.json").read_text()) == GOOD
    assert read_submissions(tmp_path / "one.json")[0].results == sub.results


@pytest.mark.parametrize("change, field, words", [
    (lambda d: d["results"][1].update(accuracy_pct=150), "results[1].accuracy_pct", "greater than the maximum"),
    (lambda d: d.pop("method"), "(top level)", "'method' is a required property"),
    (lambda d: d.update(image_size="224"), "image_size", "is not of type 'integer', 'null'"),
    (lambda d: d.update(protocol="md-v3"), "protocol", "is not one of"),
    (lambda d: d.update(format="other"), "format", "'fewshot-bench-submission/1' was expected"),
    (lambda d: d["results"][0].update(shots=5), "results[0]", "'shots' was unexpected"),
    (lambda d: d["provenance"].pop("url"), "provenance", "'url' is a required property"),
    (lambda d: d["provenance"].update(url="javascript:alert(1)"), "provenance.url", "does not match"),
    (lambda d: d["results"][0].update(episodes=0), "results[0].episodes", "less than the minimum of 1"),
    (lambda d: d["results"][0].update(source="ilsvrc_2012"), "results[0].source",
     "is not a task or source of protocol 'md-v2'"),
    (lambda d: d["results"][1].update(source="aircraft"), "results[1].source", "already given in results[0]"),
    (lambda d: d["results"][0].pop("ci95_pct"), "results[0].ci95_pct", "required for Meta-Dataset source"),
    (lambda d: d.update(protocol="vtab-1k", results=[{"source": "dtd", "accuracy_pct": 60, "episodes": 1}]),
     "results[0].episodes", "has no interval or episodes"),
    (lambda d: d.update(results=[]), "results", "empty"),
])
def test_malformed_submissions_name_the_field(change, field, words):
    doc = copy.deepcopy(GOOD)
    change(doc)
    message = _error(doc)
    assert f"{field}: " in message and words in message, message
    assert "sub.json" in message


def test_every_problem_is_listed():
    doc = copy.deepcopy(GOOD)
    doc["method"] = ""
    doc["results"][0]["accuracy_pct"] = -1
    message = _error(doc)
    assert "method: '' should be non-empty" in message
    assert "results[0].accuracy_pct: -1 is less than the minimum of 0" in message


def test_non_finite_numbers_are_refused(tmp_path):
    doc = copy.deepcopy(GOOD)
    doc["results"][0]["accuracy_pct"] = float("nan")       # NaN passes JSON Schema's bounds
    assert "results[0].accuracy_pct: nan is not a finite number" in _error(doc)
    path = tmp_path / "nan.json"
    path.write_text(json.dumps(GOOD).replace("55.5", "NaN"))
    with pytest.raises(DataError, match="nan.json: NaN is not a number JSON allows"):
        read_submissions(path)


def test_not_a_json_object():
    assert "(top level): [1, 2] is not of type 'object'" in _error([1, 2])


def test_files_report_syntax_errors_and_jsonl_lines(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"method": "x",,}')
    with pytest.raises(DataError, match=r"bad.json: not JSON \(Expecting property name .* line 1 column 16\)"):
        read_submissions(bad)
    lines = tmp_path / "refs.jsonl"
    second = copy.deepcopy(GOOD)
    second["results"][0]["accuracy_pct"] = "high"
    lines.write_text(json.dumps(GOOD) + "\n\n" + json.dumps(second) + "\n")
    with pytest.raises(DataError, match=r"refs.jsonl line 3:\n  results\[0\].accuracy_pct: 'high' is not of type"):
        read_submissions(lines)
    with pytest.raises(DataError, match="does not exist"):
        read_submissions(tmp_path / "missing.json")


def test_reported_means_only_for_vtab():
    doc = copy.deepcopy(GOOD)
    doc["reported_means"] = {"mean": 50.0}
    assert "reported_means: protocol 'md-v2' has no VTAB half" in _error(doc)
    doc.update(protocol="vtab-1k", results=[])
    assert from_dict(doc).reported_means == {"mean": 50.0}


def test_shipped_references_are_valid():
    files = sorted((REPO / "leaderboards" / "references").glob("*.jsonl"))
    assert files
    for f in files:
        for sub in read_submissions(f):
            assert sub.provenance["kind"] in ("paper", "repository")
            assert sub.provenance["url"].startswith("https://github.com/")


# ---------------------------------------------------------------- export from a results database

MINI_VTAB = [("mini_digits", "natural"), ("mini_textures", "natural"), ("mini_histology", "specialized"),
             ("mini_dsprites_location", "structured"), ("mini_dsprites_orientation", "structured")]


def _mini_db(path, fail_photos=False):
    db = ResultsDB(path)
    run = RunInfo("mini", "toy", "toy@123", "toy\n", 0, 32)
    correct = {"mini_digits": 45, "mini_textures": 40, "mini_histology": 35, "mini_dsprites_location": 20,
               "mini_dsprites_orientation": 15}
    for source, group in MINI_VTAB:
        db.record(run, Row(source, group, "vtab", POOLED, source, correct[source], 50), fingerprint="f", seconds=1.0)
    for i, c in enumerate([5, 10]):        # accuracies 0.5 and 1.0
        db.record(run, Row("mini_fonts", "md", "md", EPISODES, str(i), c, 10), fingerprint="f", seconds=1.0)
    for i, c in enumerate([8, 6, 10]):     # accuracies 0.8, 0.6, 1.0
        row = Row("mini_photos", "md", "md", EPISODES, str(i), c, 10)
        if fail_photos and i == 2:
            row = Row("mini_photos", "md", "md", EPISODES, str(i), 0, 0, status="failed", error="boom")
        db.record(run, row, fingerprint="f", seconds=1.0)
    other = RunInfo("toy-suite", "toy", "toy@123", "toy\n", 0, 32)
    db.record(other, Row("x", "natural", "vtab", POOLED, "x", 1, 2), fingerprint="f", seconds=1.0)
    db.close()
    return run


def test_export_scores_by_the_evaluator_rules(tmp_path):
    run = _mini_db(tmp_path / "r.sqlite")
    subs, notes = export_runs(tmp_path / "r.sqlite", pretraining_data="nothing", image_size=32)
    assert len(subs) == 1 and "suite 'toy-suite' is not a protocol" in notes[0]
    sub = subs[0]
    assert (sub.method, sub.backbone, sub.protocol, sub.image_size) == ("toy", "toy", "mini", 32)
    assert sub.provenance["run_key"] == run.key and sub.provenance["config_hash"] == run.config_hash
    figs = {f.source: f for f in sub.results}
    assert figs["mini_digits"].accuracy_pct == 90.0 and figs["mini_digits"].ci95_pct is None
    # fonts: mean(0.5, 1.0) = 0.75; population std 0.25; 1.96 * 0.25 / sqrt(2) = 0.346482
    assert figs["mini_fonts"].accuracy_pct == 75.0
    assert figs["mini_fonts"].ci95_pct == pytest.approx(34.6482, abs=1e-4)
    assert figs["mini_fonts"].episodes == 2
    # photos: mean 0.8; std sqrt(0.08 / 3) = 0.163299; 1.96 * 0.163299 / sqrt(3) = 0.184791
    assert figs["mini_photos"].accuracy_pct == pytest.approx(80.0)
    assert figs["mini_photos"].ci95_pct == pytest.approx(18.4791, abs=1e-4)


def test_export_leaves_out_sources_with_failures(tmp_path):
    _mini_db(tmp_path / "r.sqlite", fail_photos=True)
    (sub,), notes = export_runs(tmp_path / "r.sqlite")
    assert "mini_photos" not in {f.source for f in sub.results}
    assert sub.provenance["incomplete"] == ["mini_photos: 2/3 done"]
    assert any("mini_photos: 2/3 done" in n for n in notes)
    assert sub.pretraining_data == "not stated" and sub.image_size is None


def test_export_refuses_other_files(tmp_path):
    junk = tmp_path / "junk.sqlite"
    import sqlite3

    sqlite3.connect(junk).execute("CREATE TABLE other (x)").connection.commit()
    with pytest.raises(DataError, match="is not a fewshot-bench results database"):
        export_runs(junk)


def test_board_means_agree_with_the_evaluator_summary(tmp_path):
    from fewshot_bench.evaluation.scores import summarize
    from fewshot_bench.leaderboard.tables import build_board

    run = _mini_db(tmp_path / "r.sqlite")
    (sub,), _ = export_runs(tmp_path / "r.sqlite")
    db = ResultsDB(tmp_path / "r.sqlite")
    rows = db.rows(run)
    db.close()
    summary = summarize(rows, {s: 1 for s, _ in MINI_VTAB} | {"mini_fonts": 2, "mini_photos": 3})
    (table,) = build_board([sub]).summary_tables
    (row,) = table.rows
    for group in ("natural", "specialized", "structured"):
        assert row.vtab.group_means[group] == pytest.approx(100 * summary.group_means[group])
    assert row.vtab.mean == pytest.approx(100 * summary.benchmark_means["vtab"])
    assert row.md.mean == pytest.approx(100 * summary.benchmark_means["md"])
    assert row.overall == pytest.approx(100 * summary.overall)


def test_export_uses_the_runs_table(tmp_path):
    from fewshot_bench.tasks import Suite, TaskSource

    run = _mini_db(tmp_path / "r.sqlite")
    # The run expected 4 photo episodes (3 are recorded) and ran at 32 px.
    sources = [TaskSource(s, g, POOLED, 1, None) for s, g in MINI_VTAB]
    sources += [TaskSource("mini_fonts", "md", EPISODES, 2, None, "md"),
                TaskSource("mini_photos", "md", EPISODES, 4, None, "md")]
    db = ResultsDB(tmp_path / "r.sqlite")
    db.start_run(run, Suite("mini", tuple(sources)), versions={"numpy": "1"})
    db.close()
    (sub,), _ = export_runs(tmp_path / "r.sqlite")
    assert sub.image_size == 32
    assert "mini_photos" not in {f.source for f in sub.results} and "mini_fonts" in {f.source for f in sub.results}
    assert sub.provenance["incomplete"] == ["mini_photos: 3/4 done"]
