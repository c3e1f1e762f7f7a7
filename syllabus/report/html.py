"""One self-contained HTML file per report: inline CSS, plots as base64 PNG data URIs.

The page loads nothing from anywhere (a Content-Security-Policy in the page forbids it), so it
opens from disk, from an archive or from an e-mail attachment with every plot in place.

    report = Report("ResNet-20 on CIFAR-10", "normalization sweep", plots_dir=run_dir / "plots")
    report.section("Results").table(rows, highlight_best={"val/accuracy": "max"})
    report.figure(plot_metric_grid(history, ["loss", "accuracy"]), "curves")
    report.write(run_dir / "report.html")
"""

from __future__ import annotations

import base64
import html
import json
import math
import re
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from syllabus.report.plots import is_number, save_figure
from syllabus.runs import atomic_write_text

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")

CSS = """
:root { --fg: #1f2328; --muted: #59636e; --line: #d1d9e0; --zebra: #f6f8fa; --accent: #0969da; }
* { box-sizing: border-box; }
body { margin: 0; color: var(--fg); background: #fff; line-height: 1.5;
  font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; }
main { max-width: 1100px; margin: 0 auto; padding: 24px 20px 64px; }
header { border-bottom: 1px solid var(--line); margin-bottom: 8px; padding-bottom: 12px; }
h1 { font-size: 1.7em; margin: 0 0 4px; }
h2 { font-size: 1.3em; margin: 36px 0 12px; padding-bottom: 4px; border-bottom: 1px solid var(--line); }
.subtitle { font-size: 1.1em; color: var(--muted); margin: 0; }
.generated { font-size: 0.85em; color: var(--muted); margin: 6px 0 0; }
nav { font-size: 0.9em; margin: 8px 0 0; }
nav a { margin-right: 14px; }
a { color: var(--accent); text-decoration: none; }
a:hover { text-decoration: underline; }
.table-wrap { overflow-x: auto; margin: 12px 0; }
table { border-collapse: collapse; font-size: 0.9em; font-variant-numeric: tabular-nums; }
th, td { padding: 5px 12px; border-bottom: 1px solid var(--line); text-align: left; white-space: nowrap; }
th { background: #eef1f4; font-weight: 600; }
tbody tr:nth-child(even) { background: var(--zebra); }
td.num { text-align: right; }
td.best { font-weight: 700; }
figure { margin: 16px 0; }
figure img { max-width: 100%; height: auto; border: 1px solid var(--line); border-radius: 4px; }
figcaption { font-size: 0.9em; color: var(--muted); margin-top: 4px; }
details { margin: 12px 0; }
summary { cursor: pointer; color: var(--accent); }
pre { background: var(--zebra); border: 1px solid var(--line); border-radius: 4px; padding: 10px 12px;
  overflow-x: auto; font: 12.5px/1.45 ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; }
.empty { color: var(--muted); font-style: italic; }
th { white-space: normal; }
.cards { display: grid; grid-template-columns: repeat(auto-fill, minmax(330px, 1fr)); gap: 16px; margin: 16px 0; }
.card { border: 1px solid var(--line); border-radius: 6px; padding: 12px 14px; min-width: 0; }
.card h3 { margin: 0; font-size: 1.1em; }
.card .what { color: var(--muted); font-size: 0.9em; margin: 2px 0 8px; }
.card .badge { float: right; font-size: 0.85em; color: var(--muted); }
.card figure { margin: 8px 0; }
.card table { font-size: 0.8em; }
.card th, .card td { padding: 3px 6px; }
"""

# Nothing may be fetched: images only from data: URIs, styles only inline.
CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"


def _esc(text: object) -> str:
    return html.escape(str(text), quote=True)


def _cell_text(value: object, floatfmt: str) -> str:
    if value is None:
        return ""
    if isinstance(value, (float, np.floating)):
        return floatfmt.format(float(value))
    return str(value)


def _best_values(rows: Sequence[Mapping[str, Any]], highlight_best: Mapping[str, str]) -> dict[str, float]:
    """Column -> best finite numeric value, for the columns that have one."""
    best = {}
    for column, mode in highlight_best.items():
        if mode not in ("max", "min"):
            raise ValueError(f"highlight_best[{column!r}] must be 'max' or 'min', got {mode!r}")
        values = [float(r[column]) for r in rows if is_number(r.get(column)) and math.isfinite(float(r[column]))]
        if values:
            best[column] = max(values) if mode == "max" else min(values)
    return best


def png_data_uri(png: bytes) -> str:
    """``data:image/png;base64,...`` for PNG bytes (checked by signature)."""
    if not png.startswith(PNG_SIGNATURE):
        raise ValueError("not a PNG image")
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


class Report:
    """Builder of one self-contained HTML page; each method appends a block and returns ``self``.

    Args:
        title: page title and main heading.
        subtitle: one line under the title (experiment, dataset, run id...).
        plots_dir: where ``figure`` saves each plot as a PNG next to the report (needed only by
            ``figure``; ``image`` inlines an existing PNG).
    """

    def __init__(self, title: str, subtitle: str = "", plots_dir: str | Path | None = None):
        self.title = title
        self.subtitle = subtitle
        self.plots_dir = Path(plots_dir) if plots_dir is not None else None
        self._blocks: list[str] = []
        self._sections: list[tuple[str, str]] = []  # (anchor id, heading)
        self._figure_names: set[str] = set()

    def section(self, heading: str) -> Report:
        """A level-2 heading, also listed in the navigation under the title."""
        anchor = f"s{len(self._sections) + 1}-" + (re.sub(r"[^a-z0-9]+", "-", heading.lower()).strip("-") or "x")
        self._sections.append((anchor, heading))
        self._blocks.append(f'<h2 id="{anchor}">{_esc(heading)}</h2>')
        return self

    def text(self, paragraph: str) -> Report:
        """A paragraph of plain text (HTML in it is shown, not interpreted)."""
        self._blocks.append(f"<p>{_esc(paragraph)}</p>")
        return self

    def table(
        self,
        rows: Sequence[Mapping[str, Any]],
        columns: Sequence[str] | None = None,
        floatfmt: str = "{:.4f}",
        highlight_best: Mapping[str, str] | None = None,
    ) -> Report:
        """A table of ``rows`` (dicts); missing cells are blank.

        Args:
            rows: one dict per row.
            columns: column order; by default every key, in order of first appearance.
            floatfmt: format of float cells (integers and text are shown as they are).
            highlight_best: column -> "max" or "min"; the best numeric cells of that column
                (all of them on a tie) are bold.
        """
        columns = list(columns) if columns is not None else list(dict.fromkeys(k for r in rows for k in r))
        if not columns:
            self._blocks.append('<p class="empty">No rows.</p>')
            return self
        best = _best_values(rows, highlight_best or {})
        head = "".join(f"<th>{_esc(c)}</th>" for c in columns)
        body = "".join(
            "<tr>" + "".join(self._cell(r.get(c), c, best, floatfmt) for c in columns) + "</tr>" for r in rows
        )
        self._blocks.append(
            f'<div class="table-wrap"><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'
        )
        return self

    @staticmethod
    def _cell(value: object, column: str, best: Mapping[str, float], floatfmt: str) -> str:
        classes = []
        if is_number(value):
            classes.append("num")
            if column in best and float(value) == best[column]:
                classes.append("best")
        attr = f' class="{" ".join(classes)}"' if classes else ""
        return f"<td{attr}>{_esc(_cell_text(value, floatfmt))}</td>"

    def image(self, png: str | Path | bytes, caption: str = "") -> Report:
        """A PNG (file path or bytes) inlined as a data URI, with an optional caption."""
        data = png if isinstance(png, bytes) else Path(png).read_bytes()
        caption_html = f"<figcaption>{_esc(caption)}</figcaption>" if caption else ""
        self._blocks.append(f'<figure><img src="{png_data_uri(data)}" alt="{_esc(caption)}">{caption_html}</figure>')
        return self

    def figure(self, fig: Figure, name: str, caption: str = "") -> Report:
        """Save ``fig`` as ``plots_dir/<name>.png`` and inline that PNG."""
        if self.plots_dir is None:
            raise ValueError("Report.figure needs plots_dir; give it to Report(...) or use Report.image")
        stem = name.removesuffix(".png")
        if not _SAFE_NAME.fullmatch(stem):
            raise ValueError(f"figure name {name!r} must be letters, digits, '_', '-' or '.'")
        if stem in self._figure_names:
            raise ValueError(f"figure name {stem!r} already used in this report")
        self._figure_names.add(stem)
        return self.image(save_figure(fig, self.plots_dir / f"{stem}.png"), caption)

    def link(self, href: str, text: str) -> Report:
        """A link on its own line, e.g. to ``metrics.jsonl`` next to the report."""
        if href.strip().lower().startswith(("javascript:", "data:")):
            raise ValueError(f"refusing link to {href!r}")
        self._blocks.append(f'<p><a href="{_esc(href)}">{_esc(text)}</a></p>')
        return self

    def card(self, heading: str, what: str = "", badge: str = "") -> Report:
        """A card in a grid of cards (the index page); returns the card to add blocks to."""
        card = Report(heading, what, self.plots_dir)
        card._badge = badge
        self._blocks.append(card)
        return card

    def _card_html(self) -> str:
        badge = f'<span class="badge">{_esc(self._badge)}</span>' if getattr(self, "_badge", "") else ""
        what = f'<p class="what">{_esc(self.subtitle)}</p>' if self.subtitle else ""
        return f'<article class="card">{badge}<h3>{_esc(self.title)}</h3>{what}{"".join(self._blocks)}</article>'

    def _body(self) -> str:
        """Blocks joined; consecutive cards share one grid."""
        out, cards = [], []
        for block in [*self._blocks, None]:
            if isinstance(block, Report):
                cards.append(block._card_html())
                continue
            if cards:
                out.append('<div class="cards">' + "".join(cards) + "</div>")
                cards = []
            if block is not None:
                out.append(block)
        return "\n".join(out)

    def details(self, summary: str, content: str | Mapping[str, Any] | Sequence[Any]) -> Report:
        """A collapsed block of preformatted text; dicts and lists are shown as indented JSON."""
        body = content if isinstance(content, str) else json.dumps(content, indent=2, sort_keys=True, default=str)
        self._blocks.append(f"<details><summary>{_esc(summary)}</summary><pre>{_esc(body)}</pre></details>")
        return self

    def render(self) -> str:
        """The whole page as a string."""
        generated = datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
        subtitle = f'<p class="subtitle">{_esc(self.subtitle)}</p>' if self.subtitle else ""
        nav = ""
        if len(self._sections) > 1:
            nav = "<nav>" + "".join(f'<a href="#{a}">{_esc(h)}</a>' for a, h in self._sections) + "</nav>"
        return (
            '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
            f'<meta http-equiv="Content-Security-Policy" content="{CSP}">\n'
            '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
            f"<title>{_esc(self.title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n<main>\n"
            f"<header><h1>{_esc(self.title)}</h1>{subtitle}"
            f'<p class="generated">Generated {_esc(generated)}</p>{nav}</header>\n'
            + self._body()
            + "\n</main>\n</body>\n</html>\n"
        )

    def write(self, path: str | Path) -> Path:
        """Write the page to ``path`` atomically (temporary file, then ``os.replace``)."""
        return atomic_write_text(path, self.render())
