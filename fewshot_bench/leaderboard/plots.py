"""Leaderboard plots as self-contained SVG (matplotlib, no network, no fonts to fetch).

Text is drawn as paths and the output carries no date, so the same board
gives the same bytes. The HTML page embeds each plot as a ``data:`` URI in an
``<img>``, where nothing inside the SVG can run or reach the page.
"""

from __future__ import annotations

import base64
import io
from typing import Optional, Sequence

SVG_SETTINGS = {"svg.fonttype": "path", "svg.hashsalt": "fewshot-bench", "font.size": 9}
PALETTE = "tab20"


def plain_text(label: str) -> str:
    """A label matplotlib draws literally (``$`` would start mathtext, which can fail on bad input)."""
    return label.replace("\\", "\\\\").replace("$", r"\$")


def _svg(fig) -> str:
    buffer = io.StringIO()
    fig.savefig(buffer, format="svg", bbox_inches="tight", metadata={"Date": None})
    return buffer.getvalue()


def _colors(n: int) -> list:
    """Distinct colours: tab20's ten strong hues first, then their light variants."""
    from matplotlib import colormaps

    cmap = colormaps[PALETTE]
    order = list(range(0, cmap.N, 2)) + list(range(1, cmap.N, 2))
    return [cmap(order[i % cmap.N]) for i in range(n)]


def group_bars(title: str, groups: Sequence[str], series: Sequence[tuple[str, Sequence[Optional[float]]]],
               ylabel: str = "accuracy (%)") -> str:
    """Grouped bars: one cluster per group, one bar per method (``None`` values are left empty).

    Methods without any value are left out.
    """
    import matplotlib
    from matplotlib.figure import Figure

    series = [(label, values) for label, values in series if any(v is not None for v in values)]
    with matplotlib.rc_context(SVG_SETTINGS):
        width = max(5.0, 0.9 + 0.16 * len(groups) * max(1, len(series)))
        fig = Figure(figsize=(min(width, 14.0), 3.6))
        ax = fig.subplots()
        n = max(1, len(series))
        bar = 0.8 / n
        for k, ((label, values), color) in enumerate(zip(series, _colors(n))):
            xs = [g + (k - (n - 1) / 2) * bar for g, v in enumerate(values) if v is not None]
            ys = [v for v in values if v is not None]
            ax.bar(xs, ys, bar, label=plain_text(label), color=color)
        ax.set_xticks(range(len(groups)), [plain_text(g) for g in groups])
        ax.set_ylim(0, 100)
        ax.set_ylabel(ylabel)
        ax.set_title(plain_text(title))
        ax.grid(axis="y", alpha=0.3)
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False, fontsize=7)
        return _svg(fig)


def scatter(title: str, points: Sequence[tuple[str, float, float]], xlabel: str, ylabel: str) -> str:
    """One labelled point per method."""
    import matplotlib
    from matplotlib.figure import Figure

    with matplotlib.rc_context(SVG_SETTINGS):
        fig = Figure(figsize=(5.5, 4.2))
        ax = fig.subplots()
        for (label, x, y), color in zip(points, _colors(len(points))):
            ax.scatter([x], [y], s=40, color=color, label=plain_text(label), zorder=3)
            ax.annotate(plain_text(label), (x, y), textcoords="offset points", xytext=(5, 4), fontsize=7)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.set_title(plain_text(title))
        ax.set_xlim(0, 100)
        ax.set_ylim(0, 100)
        ax.grid(alpha=0.3)
        return _svg(fig)


def data_uri(svg: str) -> str:
    return "data:image/svg+xml;base64," + base64.b64encode(svg.encode("utf-8")).decode("ascii")
