"""Tables and renderings: exact Markdown on a small known input, escaping, CSV, protocol mixing, the board."""

import base64
import csv
import io
import shutil
from html.parser import HTMLParser
from pathlib import Path

import pytest

from fewshot_bench.errors import ConfigError
from fewshot_bench.leaderboard.commands import regenerate_board
from fewshot_bench.leaderboard.ranking import positional_ranks
from fewshot_bench.leaderboard.render import (markdown_md_table, markdown_summary_table, markdown_vtab_table,
                                              render_csv, render_html, render_markdown)
from fewshot_bench.leaderboard.submission import Figure, Submission, read_submissions
from fewshot_bench.leaderboard.tables import MIXED, build_board, md_table

REPO = Path(__file__).resolve().parents[1]
PROVENANCE = {"kind": "self-reported"}


def _sub(method, results, protocol="mini", **kw):
    figs = tuple(Figure(s, a, c, n) for s, a, c, n in results)
    fields = dict(backbone="R18", pretraining_data="none", image_size=84, provenance=PROVENANCE, origin=method)
    fields.update(kw)
    return Submission(method, protocol=protocol, results=figs, **fields)


VTAB_ALPHA = [("mini_digits", 90.0, None, None), ("mini_textures", 80.0, None, None),
              ("mini_histology", 70.0, None, None), ("mini_dsprites_location", 40.0, None, None),
              ("mini_dsprites_orientation", 30.0, None, None)]


@pytest.fixture
def small():
    """Three methods on mini; hand-computed ranks in the comments of the tests below."""
    return [
        _sub("Alpha", [("mini_fonts", 80.0, 1.0, 100), ("mini_photos", 70.0, 2.0, 100)] + VTAB_ALPHA),
        _sub("Beta", [("mini_fonts", 79.0, 1.0, 100), ("mini_photos", 60.0, 1.0, 100),
                      ("mini_digits", 95.0, None, None)]),
        _sub("Gamma", [("mini_fonts", 75.0, 0.5, 100), ("mini_photos", 69.0, 3.0, 100)]),
    ]


def test_md_table_markdown_exactly(small):
    # fonts: best Alpha 80 ± 1; Beta 79 ± 1 within sqrt(1 + 1) -> tie (1.5, 1.5); Gamma 75 ± 0.5, gap 5 > 1.12 -> 3
    # photos: best Alpha 70 ± 2; Gamma 69 ± 3 within sqrt(4 + 9) -> tie (1.5); Beta 60 ± 1, gap 10 > 2.24 -> 3
    # averages: Alpha 1.5, Beta (1.5 + 3) / 2 = 2.25, Gamma 2.25 (ties ordered by name)
    board = build_board(small)
    assert markdown_md_table(board.md_tables[0]) == "\n".join([
        r"| Method | Backbone | Pretraining | mini\_fonts | mini\_photos | Avg rank |",
        "| --- | --- | --- | ---: | ---: | ---: |",
        "| Alpha | R18 | none | **80.00 ± 1.00 (1.5)** | **70.00 ± 2.00 (1.5)** | 1.50 |",
        "| Beta | R18 | none | **79.00 ± 1.00 (1.5)** | 60.00 ± 1.00 (3) | 2.25 |",
        "| Gamma | R18 | none | 75.00 ± 0.50 (3) | **69.00 ± 3.00 (1.5)** | 2.25 |",
    ])


def test_vtab_table_markdown_exactly(small):
    # Alpha: natural (90 + 80) / 2 = 85, specialized 70, structured (40 + 30) / 2 = 35, mean 310 / 5 = 62
    # Beta has one task: no means. Gamma has no VTAB figure: no row.
    board = build_board(small)
    assert markdown_vtab_table(board.vtab_tables[0]) == "\n".join([
        r"| Method | Backbone | Pretraining | mini\_digits | mini\_textures | mini\_histology | "
        r"mini\_dsprites\_location | mini\_dsprites\_orientation | Natural | Specialized | Structured | Mean |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        "| Alpha | R18 | none | 90.0 | **80.0** | **70.0** | **40.0** | **30.0** | **85.0** | **70.0** | **35.0** "
        "| **62.0** |",
        "| Beta | R18 | none | **95.0** | — | — | — | — | — | — | — | — |",
    ])


def test_summary_table_markdown_exactly(small):
    # Alpha: MD mean (80 + 70) / 2 = 75; overall (90 + 80 + 70 + 40 + 30 + 80 + 70) / 7 = 65.71
    # Beta: MD mean (79 + 60) / 2 = 69.5, no VTAB means, so no overall
    board = build_board(small)
    assert markdown_summary_table(board.summary_tables[0]) == "\n".join([
        "| Method | Backbone | Pretraining | Image size | VTAB natural | VTAB specialized | VTAB structured | "
        "VTAB mean | MD mean | Overall | MD avg rank |",
        "| --- | --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        "| Alpha | R18 | none | 84 px | **85.0** | **70.0** | **35.0** | **62.0** | **75.0** | **65.7** | 1.50 |",
        "| Beta | R18 | none | 84 px | — | — | — | — | 69.5 | — | 2.25 |",
    ])


def test_csv_holds_the_same_numbers(small):
    rows = list(csv.DictReader(io.StringIO(render_csv(build_board(small)))))
    fonts = {r["method"]: r for r in rows if r["table"] == "md" and r["column"] == "mini_fonts"}
    assert (fonts["Beta"]["accuracy_pct"], fonts["Beta"]["ci95_pct"], fonts["Beta"]["episodes"],
            fonts["Beta"]["rank"], fonts["Beta"]["note"]) == ("79", "1", "100", "1.5", "tied with the best")
    avg = {r["method"]: r["rank"] for r in rows if r["column"] == "average_rank"}
    assert avg == {"Alpha": "1.5", "Beta": "2.25", "Gamma": "2.25"}
    overall = [r for r in rows if r["table"] == "vtab+md" and r["column"] == "overall"]
    assert [(r["method"], r["accuracy_pct"]) for r in overall] == [("Alpha", "65.7143"), ("Beta", "")]


def test_csv_defuses_formulas():
    sub = _sub("=HYPERLINK(\"http://x\")", [("mini_fonts", 50.0, 1.0, 10)], backbone="+cmd")
    row = next(csv.DictReader(io.StringIO(render_csv(build_board([sub])))))
    assert row["method"] == "'=HYPERLINK(\"http://x\")" and row["backbone"] == "'+cmd"


def test_markdown_escapes_markup():
    sub = _sub("a|b *c* <i>x</i> [l](http://e)", [("mini_fonts", 50.0, 1.0, 10)])
    text = markdown_md_table(build_board([sub]).md_tables[0])
    assert r"| a\|b \*c\* &lt;i&gt;x&lt;/i&gt; \[l\](http://e) | R18 |" in text


# ---------------------------------------------------------------- protocol versions

def test_mixed_protocol_versions_are_refused_in_one_table():
    v1 = _sub("One", [("ilsvrc_2012", 50.0, 1.0, 600)], protocol="md-v1")
    v2 = _sub("Two", [("aircraft", 60.0, 1.0, 600)], protocol="md-v2")
    with pytest.raises(ConfigError, match=r"different protocol versions \(md-v1, md-v2\).*--mix_protocols"):
        md_table([("md-v1", v1), ("md-v2", v2)])
    board = build_board([v1, v2])
    assert [t.version for t in board.md_tables] == ["md-v1", "md-v2"]
    mixed = build_board([v1, v2], mix_protocols=True)
    (table,) = mixed.md_tables
    assert table.version == MIXED
    assert "| Method | Backbone | Pretraining | Protocol | ILSVRC |" in markdown_md_table(table)
    assert [t.version for t in build_board([v1, v2], protocols=["md-v2"]).md_tables] == ["md-v2"]
    with pytest.raises(ConfigError, match="--protocol 'md-v9': unknown"):
        build_board([v1], protocols=["md-v9"])


def test_vtab_md_pairs_its_halves():
    # VTAB-v2 and MD-v2 halves of one method from two submissions meet in one summary row
    tasks = [("caltech101", 80.0, None, None)]
    a = _sub("M", tasks, protocol="vtab-v2")
    b = _sub("M", [("aircraft", 60.0, 1.0, 600)], protocol="md-v2")
    board = build_board([a, b])
    (summary,) = board.summary_tables
    assert (summary.vtab_version, summary.md_version) == ("vtab-v2", "md-v2")
    assert summary.rows[0].vtab.submission is a and summary.rows[0].md.submission is b


def test_the_same_method_twice_in_one_table_is_refused():
    a = _sub("Same", [("mini_fonts", 50.0, 1.0, 10)])
    with pytest.raises(ConfigError, match="both describe method 'Same'.*another 'method' name"):
        build_board([a, _sub("Same", [("mini_fonts", 51.0, 1.0, 10)])])


# ---------------------------------------------------------------- HTML

EVIL = "<script>document.title='pwned'</script><img src=x onerror=\"document.title='pwned'\"> $\\frac$ & co"


class _Page(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags, self.attrs, self.text, self.title = [], [], [], ""
        self._in_title = False

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.attrs += [(tag, k, v) for k, v in attrs]
        self._in_title = tag == "title"

    def handle_endtag(self, tag):
        self._in_title = False

    def handle_data(self, data):
        self.text.append(data)
        if self._in_title:
            self.title += data


def _evil_board():
    evil = _sub(EVIL, [("mini_fonts", 80.0, 1.0, 100), ("mini_photos", 70.0, 2.0, 100)] + VTAB_ALPHA,
                backbone="\"><b>bold</b>", provenance={"kind": "paper", "citation": "<b>c</b>", "table": "T1",
                                                       "url": "https://example.org/?a=1&b=2"})
    return build_board([evil, _sub("Plain", [("mini_fonts", 70.0, 1.0, 100)] + VTAB_ALPHA[:1])])


def test_html_shows_untrusted_strings_as_text():
    page = _Page()
    page.feed(render_html(_evil_board(), "Board <b>", ["in.json"]))
    assert "script" not in page.tags and "b" not in page.tags
    assert not [a for _, a, _ in page.attrs if a.startswith("on")]
    text = "".join(page.text)
    assert EVIL in text and "\"><b>bold</b>" in text and "<b>c</b>" in text
    assert page.title == "Board <b>"
    hrefs = [v for tag, a, v in page.attrs if a == "href" and not v.startswith("#")]
    assert hrefs == ["https://example.org/?a=1&b=2"]
    csp = [v for tag, a, v in page.attrs if tag == "meta" and a == "content" and "default-src" in v]
    assert csp == ["default-src 'none'; img-src data:; style-src 'unsafe-inline'"]


def test_html_is_self_contained_with_its_plots():
    page = _Page()
    page.feed(render_html(_evil_board(), "Board"))
    sources = [v for tag, a, v in page.attrs if tag == "img" and a == "src"]
    kinds = [v for tag, a, v in page.attrs if a == "data-plot"]
    assert kinds == ["bars", "scatter", "bars"]         # VTAB+MD bars and scatter, VTAB bars
    assert len(sources) == 3
    for src in sources:
        assert src.startswith("data:image/svg+xml;base64,")
        svg = base64.b64decode(src.split(",", 1)[1]).decode()
        assert svg.lstrip().startswith("<?xml") and "<svg" in svg and "<script" not in svg
    links = [v for tag, a, v in page.attrs if a in ("src", "href") and not v.startswith(("data:", "#", "https://ex"))]
    assert links == []                                    # nothing to fetch
    assert "link" not in page.tags and "script" not in page.tags


# ---------------------------------------------------------------- published references and the board

def test_md_readme_average_ranks_reproduce_without_ties():
    """The README ranked each of its two 7-method tables by plain accuracy order: our transcription must agree."""
    subs = read_submissions(REPO / "leaderboards" / "references" / "md_v1_meta_dataset_readme.jsonl")
    published = {"ILSVRC-2012 only (Meta-Dataset training classes)": [5.0, 2.5, 4.0, 2.4, 6.7, 5.8, 1.6],
                 "all Meta-Dataset training sources": [4.6, 3.3, 4.5, 2.5, 6.5, 5.2, 1.4]}
    for pretraining, expected in published.items():
        group = [s for s in subs if s.pretraining_data == pretraining]
        assert [s.method for s in group] == ["k-NN", "Finetune", "MatchingNet", "ProtoNet", "fo-MAML",
                                             "RelationNet", "fo-Proto-MAML"]
        figures = [s.figures("md") for s in group]
        totals = [0.0] * len(group)
        for source in figures[0]:
            for i, r in enumerate(positional_ranks([f[source].accuracy_pct for f in figures])):
                totals[i] += r
        assert [round(t / 10 + 1e-9, 1) for t in totals] == expected


def test_bit_reported_mean_is_the_task_weighted_mean():
    # VTAB-1k has 7 natural, 4 specialized and 8 structured tasks
    for sub in read_submissions(REPO / "leaderboards" / "references" / "vtab_1k_big_transfer_readme.jsonl"):
        m = sub.reported_means
        assert (7 * m["natural"] + 4 * m["specialized"] + 8 * m["structured"]) / 19 == pytest.approx(m["mean"],
                                                                                                    abs=0.01)


def test_committed_board_is_up_to_date(tmp_path):
    root = tmp_path / "leaderboards"
    shutil.copytree(REPO / "leaderboards" / "references", root / "references")
    shutil.copytree(REPO / "leaderboards" / "mini", root / "mini")
    regenerate_board(root)
    for name in ("board.md", "board.csv"):
        assert (root / name).read_text() == (REPO / "leaderboards" / name).read_text(), (
            f"leaderboards/{name} is stale: run `fewshot-bench leaderboard` from the repository root")


def test_full_markdown_lists_sources(small):
    text = render_markdown(build_board(small), "T", ["a.json"])
    assert text.startswith("# T\n\nGenerated by `fewshot-bench report` from a.json.\n")
    assert "## VTAB+MD — mini + mini" in text and "## MD — mini" in text and "## VTAB — mini" in text
    assert "- Alpha (mini; backbone R18; pretraining none; image size 84 px): (self-reported)" in text


# ---------------------------------------------------------------- the page in a real browser

TAB20_FIRST = (31, 119, 180)   # matplotlib's tab20 colour of the first method: only the plots use it


def _chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        path = shutil.which(name)
        if path:
            return path
    pytest.fail("this test needs headless Chromium, which is not installed: on Debian/Ubuntu run "
                "`apt-get install -y chromium` (CI: add it to .ci/run), then rerun")


@pytest.mark.slow
def test_html_page_loads_in_headless_chromium(tmp_path):
    import subprocess

    import numpy as np
    from PIL import Image

    page_path = tmp_path / "board.html"
    page_path.write_text(render_html(_evil_board(), "Board"), encoding="utf-8")
    base = [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
            f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1400,2200"]
    url = page_path.as_uri()
    dom = subprocess.run(base + ["--dump-dom", url], capture_output=True, text=True, timeout=180, check=True).stdout
    page = _Page()
    page.feed(dom)
    assert page.title == "Board"                      # the script in the method name never ran
    assert "script" not in page.tags and page.tags.count("img") == 3 and page.tags.count("table") == 3
    assert EVIL in "".join(page.text)
    shot = tmp_path / "shot.png"
    subprocess.run(base + [f"--screenshot={shot}", url], capture_output=True, timeout=180, check=True)
    pixels = np.asarray(Image.open(shot).convert("RGB")).astype(int)
    plotted = (np.abs(pixels - np.array(TAB20_FIRST)).sum(axis=-1) <= 6).sum()
    assert plotted > 2000, f"the plots did not render: {plotted} pixels of the first method's colour"
