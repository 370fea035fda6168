"""The slides' QC report: one HTML page with each slide's overview thumbnail and statistics,
and the bad slides with their reasons."""

from __future__ import annotations

import html
import os
from collections.abc import Mapping, Sequence
from pathlib import Path


def _cell(value: object) -> str:
    """A table cell: numbers to 4 significant digits."""
    try:
        return f"{float(value):.4g}" if value not in ("", None) else ""
    except (TypeError, ValueError):
        return html.escape(str(value))


def slide_report_html(
    rows: Sequence[Mapping[str, str]],
    problems: Sequence[Mapping[str, str]],
    columns: Sequence[str],
    page: str | os.PathLike[str],
) -> str:
    """The report page: a table of ``columns`` per slide with its overview (``overview``
    column, linked relative to ``page``), then one line per bad slide."""
    base = Path(page).parent
    parts = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>Slides</title>",
        "<style>td,th{padding:2px 8px;border-bottom:1px solid #ccc}img{max-width:320px}</style>",
        "</head><body><h1>Slides</h1><table><tr><th>overview</th>",
        *(f"<th>{html.escape(c)}</th>" for c in columns),
        "</tr>",
    ]
    for r in rows:
        src = html.escape(os.path.relpath(r["overview"], base))
        parts.append(f"<tr><td><a href='{src}'><img src='{src}'></a></td>")
        parts += [f"<td>{_cell(r.get(c))}</td>" for c in columns]
        parts.append("</tr>")
    parts.append("</table>")
    parts.append(f"<h2>Bad slides ({len(problems)})</h2><ul>")
    parts += [
        f"<li>{html.escape(p['subject'])} ({html.escape(p['kind'])}): "
        f"{html.escape(p['file'])}: {html.escape(p['problem'])}</li>"
        for p in problems
    ]
    parts.append("</ul></body></html>")
    return "".join(parts)
