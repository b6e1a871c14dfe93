"""Render a :class:`~fewshot_bench.leaderboard.tables.Board` as Markdown, CSV and one HTML page.

Every string from a submission is untrusted: Markdown escapes its markup
characters, CSV defuses spreadsheet formulas, and HTML escapes every string
(``html.escape``) and forbids scripts with a Content-Security-Policy. The HTML
page is self-contained: inline CSS, plots as ``data:`` SVG images.
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import html
import io
import re
from typing import Callable, Iterable, Optional, Sequence

from fewshot_bench.leaderboard import plots
from fewshot_bench.leaderboard.protocols import VTAB_GROUPS
from fewshot_bench.leaderboard.submission import Submission
from fewshot_bench.leaderboard.tables import MIXED, Board, MdTable, SummaryRow, SummaryTable, VtabRow, VtabTable

MISSING = "—"
GENERATOR = "fewshot-bench report"
RANK_RULE = ("Ranks per source: 1 = most accurate; methods whose gap to the best is not significant "
             "(|Δ| ≤ 1.96·sqrt(s1²/n1 + s2²/n2), s = interval·sqrt(n)/1.96, n = episodes) tie with it "
             "and share the mean of their ranks; bold = tied with the best. "
             "Avg rank = mean over the sources.")
VTAB_RULE = ("Accuracy (%) pooled over each task's test set; group means over their tasks, "
             "mean over all tasks; bold = best in the column.")
REPORTED_NOTE = "* as reported by the source, which publishes no per-task figures."


# ---------------------------------------------------------------- formatting

def fmt_pct(value: Optional[float], digits: int = 1) -> str:
    return MISSING if value is None else f"{value:.{digits}f}"


def fmt_rank(rank: Optional[float]) -> str:
    """1, 1.5, 2.33: up to two decimals, no trailing zeros."""
    return MISSING if rank is None else f"{rank:.2f}".rstrip("0").rstrip(".")


def md_cell(acc: float, ci: float, rank: float) -> str:
    return f"{acc:.2f} ± {ci:.2f} ({fmt_rank(rank)})"


def md_text(text: str) -> str:
    """A string shown literally in a Markdown table cell (no markup, links, HTML or column breaks)."""
    text = re.sub(r"\s+", " ", text).strip()
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return re.sub(r"([\\`*_\[\]|])", r"\\\1", text)


def csv_text(text: str) -> str:
    """A cell no spreadsheet evaluates as a formula (OWASP: prefix ``=``, ``+``, ``-``, ``@``, tab, CR)."""
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def _protocol_title(version: str) -> str:
    return "mixed protocol versions" if version == MIXED else version


def _image_size(size: Optional[int]) -> str:
    return "not stated" if size is None else f"{size} px"


def _max(values: Iterable[Optional[float]]) -> Optional[float]:
    present = [v for v in values if v is not None]
    return max(present) if present else None


def _vtab_value(row: VtabRow, key: str) -> Optional[float]:
    return row.mean if key == "mean" else row.group_means.get(key)


def table_title(table: MdTable | VtabTable | SummaryTable) -> str:
    if isinstance(table, MdTable):
        return f"MD — {_protocol_title(table.version)}"
    if isinstance(table, VtabTable):
        return f"VTAB — {_protocol_title(table.version)}"
    return f"VTAB+MD — {_protocol_title(table.vtab_version)} + {_protocol_title(table.md_version)}"


def _groups(table: VtabTable) -> list[str]:
    return [g for g in VTAB_GROUPS if any(s.group == g for s in table.sources)]


# ---------------------------------------------------------------- tables as grids of cells

@dataclasses.dataclass(frozen=True)
class Cell:
    text: str
    numeric: bool = False
    bold: bool = False


@dataclasses.dataclass(frozen=True)
class Grid:
    """A table ready to render: column titles, then rows of cells (the first ``text_columns`` are text)."""

    titles: tuple[str, ...]
    text_columns: int
    rows: tuple[tuple[Cell, ...], ...]


def _number(value: Optional[float], best: Optional[float], text: Optional[str] = None) -> Cell:
    return Cell(text if text is not None else fmt_pct(value), True, value is not None and value == best)


def _method_cells(sub: Submission, extra: Sequence[str] = ()) -> list[Cell]:
    return [Cell(t) for t in (sub.method, sub.backbone, sub.pretraining_data, *extra)]


def _method_titles(mixed: bool) -> list[str]:
    return ["Method", "Backbone", "Pretraining"] + (["Protocol"] if mixed else [])


def md_grid(table: MdTable) -> Grid:
    """MD: per source ``accuracy ± interval (rank)`` (bold: tied with the best), then the average rank."""
    mixed = table.version == MIXED
    rows = []
    for row in table.rows:
        cells = _method_cells(row.submission, [row.version] if mixed else [])
        for s in table.sources:
            f = row.cells.get(s.name)
            cells.append(Cell(MISSING, True) if f is None else
                         Cell(md_cell(f.accuracy_pct, f.ci95_pct, row.ranks[s.name]), True, s.name in row.best))
        cells.append(Cell(MISSING if row.average_rank is None else f"{row.average_rank:.2f}", True))
        rows.append(tuple(cells))
    titles = _method_titles(mixed)
    return Grid(tuple(titles + [s.title for s in table.sources] + ["Avg rank"]), len(titles), tuple(rows))


def vtab_grid(table: VtabTable) -> Grid:
    """VTAB: per task accuracy, group means and the mean over tasks (bold: best in the column)."""
    mixed = table.version == MIXED
    keys = _groups(table) + ["mean"]
    best = {s.name: _max(r.cells.get(s.name) for r in table.rows) for s in table.sources}
    best.update({k: _max(_vtab_value(r, k) for r in table.rows) for k in keys})
    rows = []
    for row in table.rows:
        cells = _method_cells(row.submission, [row.version] if mixed else [])
        cells += [_number(row.cells.get(s.name), best[s.name]) for s in table.sources]
        for key in keys:
            value = _vtab_value(row, key)
            cells.append(_number(value, best[key], fmt_pct(value) + ("*" if key in row.reported else "")))
        rows.append(tuple(cells))
    titles = _method_titles(mixed)
    return Grid(tuple(titles + [s.title for s in table.sources] + [k.capitalize() for k in keys]), len(titles),
                tuple(rows))


def _summary_columns(table: SummaryTable) -> list[tuple[str, Callable[[SummaryRow], Optional[float]]]]:
    groups = [g for g in VTAB_GROUPS if any(g in r.vtab.group_means for r in table.rows)]
    columns: list[tuple[str, Callable[[SummaryRow], Optional[float]]]] = [
        (f"VTAB {g}", functools.partial(lambda r, g: r.vtab.group_means.get(g), g=g)) for g in groups]
    return columns + [("VTAB mean", lambda r: r.vtab.mean), ("MD mean", lambda r: r.md.mean),
                      ("Overall", lambda r: r.overall)]


def summary_grid(table: SummaryTable) -> Grid:
    """VTAB+MD: VTAB group means and mean, MD mean, overall mean (bold: best), MD average rank."""
    columns = _summary_columns(table)
    best = {title: _max(get(r) for r in table.rows) for title, get in columns}
    rows = []
    for row in table.rows:
        cells = _method_cells(row.vtab.submission, [_image_size(row.vtab.submission.image_size)])
        cells += [_number(get(row), best[title]) for title, get in columns]
        cells.append(Cell(MISSING if row.md.average_rank is None else f"{row.md.average_rank:.2f}", True))
        rows.append(tuple(cells))
    titles = ["Method", "Backbone", "Pretraining", "Image size"]
    return Grid(tuple(titles + [t for t, _ in columns] + ["MD avg rank"]), len(titles), tuple(rows))


# ---------------------------------------------------------------- Markdown

def grid_markdown(grid: Grid) -> str:
    def line(cells: Iterable[str]) -> str:
        return "| " + " | ".join(cells) + " |"

    def cell(c: Cell) -> str:
        text = md_text(c.text)
        return f"**{text}**" if c.bold else text

    align = ["---"] * grid.text_columns + ["---:"] * (len(grid.titles) - grid.text_columns)
    return "\n".join([line(md_text(t) for t in grid.titles), line(align)]
                     + [line(cell(c) for c in row) for row in grid.rows])


def markdown_md_table(table: MdTable) -> str:
    return grid_markdown(md_grid(table))


def markdown_vtab_table(table: VtabTable) -> str:
    return grid_markdown(vtab_grid(table))


def markdown_summary_table(table: SummaryTable) -> str:
    return grid_markdown(summary_grid(table))


def provenance_text(sub: Submission) -> str:
    """One line saying where a submission's numbers come from."""
    p = sub.provenance
    if p.get("kind") == "results-db":
        parts = [f"results database {p.get('database', '')}", f"run {p['run_key']}", f"suite {p['suite']}",
                 f"learner {p['learner']}", f"backbone {p['backbone_id']}", f"config {p['config_hash']}",
                 f"seed {p['seed']}"]
        if p.get("incomplete"):
            parts.append("incomplete: " + "; ".join(p["incomplete"]))
    else:
        parts = [str(p.get(k)) for k in ("citation", "table") if p.get(k)]
        parts.append(f"({p['kind']})")
    if p.get("notes"):
        parts.append(str(p["notes"]))
    return ", ".join(parts)


def _submission_line(sub: Submission) -> str:
    return (f"{sub.method} ({sub.protocol}; backbone {sub.backbone}; pretraining {sub.pretraining_data}; "
            f"image size {_image_size(sub.image_size)})")


def render_markdown(board: Board, title: str, inputs: Sequence[str] = (), generator: str = GENERATOR) -> str:
    """The whole board as one Markdown document."""
    out = [f"# {md_text(title)}", ""]
    if inputs:
        out += [f"Generated by `{generator}` from " + ", ".join(md_text(i) for i in inputs) + ".", ""]
    for table in board.summary_tables:
        out += [f"## {md_text(table_title(table))}", "",
                "Means in %; MD avg rank from the MD table of the same protocol version.", "",
                markdown_summary_table(table), ""]
    for table in board.md_tables:
        out += [f"## {md_text(table_title(table))}", "",
                md_text("Mean accuracy (%) ± 95% interval over test episodes, (rank). " + RANK_RULE), "",
                markdown_md_table(table), ""]
    for table in board.vtab_tables:
        note = " " + REPORTED_NOTE if any(r.reported for r in table.rows) else ""
        out += [f"## {md_text(table_title(table))}", "", md_text(VTAB_RULE + note), "", markdown_vtab_table(table), ""]
    out += ["## Methods and sources", ""]
    for sub in board.submissions:
        line = f"- {md_text(_submission_line(sub))}: {md_text(provenance_text(sub))}"
        url = sub.provenance.get("url")
        out.append(line + (f" <{url}>" if url else ""))
    if board.notes:
        out += ["", "## Notes", ""] + [f"- {md_text(n)}" for n in board.notes]
    return "\n".join(out) + "\n"


# ---------------------------------------------------------------- CSV

CSV_COLUMNS = ("table", "protocol", "method", "backbone", "pretraining_data", "image_size", "column",
               "accuracy_pct", "ci95_pct", "episodes", "rank", "note")


def _num(x: Optional[float]) -> str:
    return "" if x is None else f"{x:.4f}".rstrip("0").rstrip(".")


def render_csv(board: Board) -> str:
    """The board's tables in long form: one line per cell."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)

    def emit(table: str, protocol: str, sub: Submission, column: str, acc=None, ci=None, episodes=None,
             rank=None, note=""):
        writer.writerow([table, protocol, csv_text(sub.method), csv_text(sub.backbone),
                         csv_text(sub.pretraining_data), "" if sub.image_size is None else sub.image_size,
                         csv_text(column), _num(acc), _num(ci), "" if episodes is None else episodes,
                         _num(rank), note])

    for t in board.summary_tables:
        for r in t.rows:
            protocol = f"{r.vtab.version} + {r.md.version}"
            for title, get in _summary_columns(t):
                emit("vtab+md", protocol, r.vtab.submission, title.lower().replace(" ", "_"), get(r))
            emit("vtab+md", protocol, r.vtab.submission, "md_average_rank", rank=r.md.average_rank)
    for t in board.md_tables:
        for r in t.rows:
            for s in t.sources:
                if s.name in r.cells:
                    f = r.cells[s.name]
                    emit("md", r.version, r.submission, s.name, f.accuracy_pct, f.ci95_pct, f.episodes,
                         r.ranks[s.name], "tied with the best" if s.name in r.best else "")
            emit("md", r.version, r.submission, "average_rank", rank=r.average_rank)
    for t in board.vtab_tables:
        for r in t.rows:
            for s in t.sources:
                if s.name in r.cells:
                    emit("vtab", r.version, r.submission, s.name, r.cells[s.name])
            for key in _groups(t) + ["mean"]:
                emit("vtab", r.version, r.submission, key, _vtab_value(r, key),
                     note="reported by the source" if key in r.reported else "")
    return buffer.getvalue()


# ---------------------------------------------------------------- HTML

CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em auto; max-width: 1400px;
       padding: 0 1em; color: #222; }
h1 { font-size: 1.6em; } h2 { font-size: 1.25em; margin-top: 2em; border-bottom: 1px solid #ccc; }
p.rule { color: #555; font-size: 0.9em; max-width: 70em; }
div.scroll { overflow-x: auto; }
table { border-collapse: collapse; font-size: 0.82em; }
th, td { border: 1px solid #ddd; padding: 0.25em 0.5em; white-space: nowrap; }
th { background: #f3f3f3; position: sticky; top: 0; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
td.best { font-weight: bold; }
tbody tr:nth-child(even) { background: #fafafa; }
figure { margin: 1em 0; } figure img { max-width: 100%; height: auto; }
figcaption { color: #555; font-size: 0.85em; }
ul.methods li { margin: 0.3em 0; font-size: 0.9em; }
"""
CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"


def esc(text: object) -> str:
    return html.escape(str(text), quote=True)


def grid_html(grid: Grid) -> str:
    def cell(c: Cell) -> str:
        classes = " ".join(name for name, on in (("num", c.numeric), ("best", c.bold)) if on)
        return f"<td class=\"{classes}\">{esc(c.text)}</td>" if classes else f"<td>{esc(c.text)}</td>"

    head = "".join(f"<th>{esc(t)}</th>" for t in grid.titles)
    body = "".join("<tr>" + "".join(cell(c) for c in row) + "</tr>" for row in grid.rows)
    return f"<div class=\"scroll\"><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>"


def _figure(svg: str, caption: str, kind: str) -> str:
    return (f"<figure class=\"plot\" data-plot=\"{esc(kind)}\"><img src=\"{plots.data_uri(svg)}\" "
            f"alt=\"{esc(caption)}\"><figcaption>{esc(caption)}</figcaption></figure>")


def vtab_bars(table: VtabTable) -> Optional[str]:
    groups = _groups(table) + ["mean"]
    series = [(r.submission.method, [_vtab_value(r, g) for g in groups]) for r in table.rows]
    series = [s for s in series if any(v is not None for v in s[1])]
    if not series:
        return None
    return plots.group_bars(table_title(table), [g.capitalize() for g in groups], series)


def summary_plots(table: SummaryTable) -> list[tuple[str, str, str]]:
    """(svg, caption, kind) for a VTAB+MD table: per-group bars and the VTAB-vs-MD scatter."""
    out = []
    groups = [g for g in VTAB_GROUPS if any(g in r.vtab.group_means for r in table.rows)]
    series = [(r.vtab.submission.method, [r.vtab.group_means.get(g) for g in groups] + [r.md.mean])
              for r in table.rows]
    out.append((plots.group_bars(table_title(table), [g.capitalize() for g in groups] + ["MD"], series),
                "Per-group means: VTAB natural, specialized, structured, and the MD mean.", "bars"))
    points = [(r.vtab.submission.method, r.vtab.mean, r.md.mean) for r in table.rows
              if r.vtab.mean is not None and r.md.mean is not None]
    if points:
        out.append((plots.scatter(table_title(table), points, "VTAB mean (%)", "MD mean (%)"),
                    "Methods by VTAB mean (x) and MD mean (y).", "scatter"))
    return out


def render_html(board: Board, title: str, inputs: Sequence[str] = (), generator: str = GENERATOR) -> str:
    """One self-contained page: tables, plots, methods and sources (needs no network)."""
    sections, toc = [], []

    def section(anchor: str, heading: str, body: str) -> None:
        toc.append(f"<li><a href=\"#{anchor}\">{esc(heading)}</a></li>")
        sections.append(f"<section id=\"{anchor}\"><h2>{esc(heading)}</h2>{body}</section>")

    for k, t in enumerate(board.summary_tables, 1):
        figs = "".join(_figure(svg, cap, kind) for svg, cap, kind in summary_plots(t))
        section(f"vtab-md-{k}", table_title(t),
                "<p class=\"rule\">Means in %; MD avg rank from the MD table of the same protocol version.</p>"
                + grid_html(summary_grid(t)) + figs)
    for k, t in enumerate(board.md_tables, 1):
        section(f"md-{k}", table_title(t),
                f"<p class=\"rule\">Mean accuracy (%) ± 95% interval over test episodes, (rank). {esc(RANK_RULE)}</p>"
                + grid_html(md_grid(t)))
    for k, t in enumerate(board.vtab_tables, 1):
        note = " " + REPORTED_NOTE if any(r.reported for r in t.rows) else ""
        svg = vtab_bars(t)
        figs = _figure(svg, "Per-group means of each method.", "bars") if svg else ""
        section(f"vtab-{k}", table_title(t), f"<p class=\"rule\">{esc(VTAB_RULE + note)}</p>" + grid_html(vtab_grid(t))
                + figs)
    items = []
    for sub in board.submissions:
        url = sub.provenance.get("url")
        link = f" <a href=\"{esc(url)}\" rel=\"noopener noreferrer\">{esc(url)}</a>" if url else ""
        items.append(f"<li><strong>{esc(_submission_line(sub))}</strong>: {esc(provenance_text(sub))}{link}</li>")
    section("methods", "Methods and sources", f"<ul class=\"methods\">{''.join(items)}</ul>")
    if board.notes:
        section("notes", "Notes", "<ul>" + "".join(f"<li>{esc(n)}</li>" for n in board.notes) + "</ul>")
    generated = (f"<p class=\"rule\">Generated by <code>{esc(generator)}</code> from "
                 + ", ".join(f"<code>{esc(i)}</code>" for i in inputs) + ".</p>") if inputs else ""
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            f"<meta http-equiv=\"Content-Security-Policy\" content=\"{CSP}\">\n"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
            f"<title>{esc(title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n"
            f"<h1>{esc(title)}</h1>\n{generated}\n<nav><ul>{''.join(toc)}</ul></nav>\n"
            + "\n".join(sections) + "\n</body>\n</html>\n")
