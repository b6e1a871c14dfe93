"""The command line: report, submission export / check (through the commands' own parser)."""

import copy
import json

from fewshot_bench.leaderboard.commands import main
from fewshot_bench.leaderboard.submission import read_submissions
from test_leaderboard_submission import GOOD, _mini_db


def _write(path, doc):
    path.write_text(json.dumps(doc))
    return path


def test_submission_check(tmp_path, capsys):
    good = _write(tmp_path / "good.json", GOOD)
    bad_doc = copy.deepcopy(GOOD)
    bad_doc["results"][0]["ci95_pct"] = "wide"
    bad = _write(tmp_path / "bad.json", bad_doc)
    assert main(["submission", "check", str(good), str(bad)]) == 1
    out, err = capsys.readouterr()
    assert "good.json: 1 valid submission(s)" in out
    assert "bad.json" in err and "results[0].ci95_pct: 'wide' is not of type 'number'" in err


def test_export_then_report(tmp_path, capsys):
    _mini_db(tmp_path / "r.sqlite")
    out_json = tmp_path / "sub.json"
    assert main(["submission", "export", "--results", str(tmp_path / "r.sqlite"), "--out", str(out_json),
                 "--method", "My <method>", "--pretraining_data", "ILSVRC-2012", "--image_size", "32"]) == 0
    (sub,) = read_submissions(out_json)
    assert (sub.method, sub.image_size, sub.protocol) == ("My <method>", 32, "mini")
    assert sub.provenance["kind"] == "results-db" and sub.provenance["seed"] == 0
    assert main(["report", str(out_json)]) == 0
    out = capsys.readouterr().out
    assert "| My &lt;method&gt; | toy | ILSVRC-2012 | 32 px |" in out


def test_report_writes_three_files(tmp_path, capsys):
    _mini_db(tmp_path / "r.sqlite")
    _write(tmp_path / "v2.json", GOOD)
    code = main(["report", str(tmp_path / "r.sqlite"), str(tmp_path / "v2.json"), "--out", str(tmp_path / "out"),
                 "--name", "b", "--title", "T"])
    assert code == 0
    names = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert names == ["b.csv", "b.html", "b.md"]
    text = (tmp_path / "out" / "b.md").read_text()
    assert "## MD — md-v2" in text and "## MD — mini" in text and "## VTAB+MD — mini + mini" in text
    assert "| toy | toy | not stated | **75.00 ± 34.65 (1)** | **80.00 ± 18.48 (1)** | 1.00 |" in text
    assert "suite 'toy-suite' is not a protocol" in text       # notes from the export


def test_report_refuses_or_mixes_protocol_versions(tmp_path, capsys):
    v1 = copy.deepcopy(GOOD)
    v1.update(protocol="md-v1", method="Old", results=[{"source": "ilsvrc_2012", "accuracy_pct": 50.0,
                                                         "ci95_pct": 1.0, "episodes": 600}])
    files = [str(_write(tmp_path / "v1.json", v1)), str(_write(tmp_path / "v2.json", GOOD))]
    assert main(["report"] + files) == 0
    out = capsys.readouterr().out
    assert out.count("## MD — ") == 2
    assert main(["report", "--mix_protocols"] + files) == 0
    out = capsys.readouterr().out
    assert "## MD — mixed protocol versions" in out and "| Protocol |" in out
    assert main(["report", "--protocol", "md-v1"] + files) == 0
    assert "## MD — md-v2" not in capsys.readouterr().out


def test_report_errors_name_the_input(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("hello")
    assert main(["report", str(tmp_path / "notes.txt")]) == 2
    assert "notes.txt: not a results database" in capsys.readouterr().err
