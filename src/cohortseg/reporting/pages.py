"""The HTML pages of the Snakemake report: the run page, the metrics and statistics tables.
Their figures are :mod:`cohortseg.reporting.figures` and :mod:`cohortseg.viz.figures`; QC
montages are :mod:`cohortseg.reporting.qc`."""

from __future__ import annotations

import html
import json
import math
from collections.abc import Callable, Mapping, Sequence

import numpy as np

from cohortseg.core.io import parse_number
from cohortseg.core.redact import shown_config
from cohortseg.evaluation.stats import PER_CLASS, PROGRESS
from cohortseg.inference.uncertainty import uncertainty_columns

# Rows of a table shown in an HTML page; the full tables are the TSV files.
MAX_TABLE_ROWS = 1000


_CSS = """
body { font-family: system-ui, sans-serif; margin: 1.5em; color: #222; }
h1 { font-size: 1.4em; } h2 { font-size: 1.15em; margin-top: 1.6em; }
table { border-collapse: collapse; font-size: 0.85em; }
th, td { border: 1px solid #ccc; padding: 2px 6px; text-align: right; white-space: nowrap; }
th { background: #f0f0f0; position: sticky; top: 0; text-align: left; }
td.text { text-align: left; }
td.flag { background: #fdd; font-weight: bold; }
pre { background: #f6f6f6; padding: 0.8em; font-size: 0.8em; overflow: auto; }
p.note { color: #666; font-size: 0.85em; }
"""


def html_page(title: str, sections: Sequence[tuple[str, str]]) -> str:
    """A standalone HTML page: a title, then (heading, HTML body) sections."""
    body = "\n".join(f"<h2>{html.escape(h)}</h2>\n{content}" for h, content in sections)
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head>\n"
        f"<body><h1>{html.escape(title)}</h1>\n{body}\n</body></html>\n"
    )


def _cell(value: object) -> tuple[str, bool]:
    """Text of a table cell and whether it is text (left-aligned) rather than a number."""
    if value is None or value == "":
        return "", True
    if isinstance(value, bool) or not _is_numeric(value):
        return html.escape(str(value)), True
    x = float(value)  # type: ignore[arg-type]
    if not math.isfinite(x):
        return ("" if math.isnan(x) else str(x)), False
    if x.is_integer() and abs(x) < 1e15:
        return str(int(x)), False
    return f"{x:.4g}", False


def _is_numeric(value: object) -> bool:
    return parse_number(value) is not None


def html_table(
    rows: Sequence[Mapping],
    columns: Sequence[str],
    flagged: Callable[[Mapping, str], bool] | None = None,
    max_rows: int = MAX_TABLE_ROWS,
) -> str:
    """An HTML table of ``rows`` (dicts) with ``columns``; numbers to 4 significant digits;
    cells where ``flagged(row, column)`` is true are highlighted. At most ``max_rows`` rows."""
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    lines = [f"<table><thead><tr>{head}</tr></thead><tbody>"]
    for row in rows[:max_rows]:
        cells = []
        for col in columns:
            text, is_text = _cell(row.get(col))
            cls = " ".join(
                k
                for k, on in (("text", is_text), ("flag", bool(flagged and flagged(row, col))))
                if on
            )
            cells.append(f'<td class="{cls}">{text}</td>' if cls else f"<td>{text}</td>")
        lines.append("<tr>" + "".join(cells) + "</tr>")
    lines.append("</tbody></table>")
    if len(rows) > max_rows:
        lines.append(f'<p class="note">{len(rows) - max_rows} more rows in the TSV file.</p>')
    return "\n".join(lines)


def metrics_page(rows: Sequence[Mapping], summary: Mapping, classes: Sequence[str]) -> str:
    """The metrics table (lowest mean Dice first) with the per-split means and medians."""
    splits = summary.get("splits", {})
    summary_rows = []
    for split, entry in splits.items():
        row: dict = {"split": split, "subjects": entry.get("n_subjects")}
        for prefix in ("dice", "hd95_mm", "volume_ml"):
            for c in classes:
                stat = entry.get(f"{prefix}_{c}")
                if stat:
                    row[f"{prefix}_{c}"] = f"{stat['mean']:.4g} / {stat['median']:.4g}"
        summary_rows.append(row)
    cols = [f"{p}_{c}" for p in ("dice", "hd95_mm", "volume_ml") for c in classes]

    def mean_dice(r: Mapping) -> float:
        d = [parse_number(r.get(f"dice_{c}"), math.nan) for c in classes]
        return float(np.mean(d)) if all(np.isfinite(d)) else math.inf

    ordered = sorted(rows, key=lambda r: (mean_dice(r), r["subject"]))
    worst = {w["subject"] for w in summary.get("worst_subjects", [])}
    return html_page(
        "Segmentation metrics",
        [
            ("Per split: mean / median", html_table(summary_rows, ["split", "subjects", *cols])),
            (
                "Per subject, lowest mean Dice first",
                '<p class="note">Dice and HD95 (mm) where the subject has a reference label; '
                "volumes (mL) of the segmentation. Highlighted: the summary's worst subjects."
                "</p>"
                + html_table(
                    ordered,
                    ["subject", "split", *cols],
                    flagged=lambda r, col: col == "subject" and r["subject"] in worst,
                ),
            ),
        ],
    )


def stats_page(rows: Sequence[Mapping], summary: Mapping, classes: Sequence[str]) -> str:
    """The statistics table (subjects flagged for review first) and the cohort summary."""
    z = float(summary.get("outlier_z", math.inf))
    summary_rows = [{"column": col, **stats} for col, stats in summary.get("columns", {}).items()]
    value_cols = [f"{q}_{c}" for q in PER_CLASS for c in classes] + uncertainty_columns(classes)
    z_cols = [f"volume_z_{c}" for c in classes]
    uz_cols = [f"uncertainty_z_{c}" for c in classes]
    ordered = sorted(rows, key=lambda r: (not r.get("review"), r["subject"]))

    def flagged(r: Mapping, col: str) -> bool:
        if col in z_cols:
            return abs(parse_number(r.get(col), math.nan)) > z
        if col in uz_cols:
            return parse_number(r.get(col), math.nan) > z
        return col == "review" and bool(r.get("review"))

    progress = summary.get("progress", {})
    return html_page(
        "Per-subject statistics",
        [
            ("Progress", html_table([progress], [k for k in PROGRESS if k in progress])),
            (
                "Per subject, flagged for review first",
                f'<p class="note">Volume z: robust z-score (median, 1.4826 × MAD) over the cohort; '
                f"|z| &gt; {z:g} flags the subject for review. Uncertainty: mean normalised "
                "predictive entropy (0–1) inside the predicted structure and its boundary band; "
                f"its robust z &gt; {z:g} flags the subject. TTA disagreement: 1 − mean Dice "
                "between the test-time-augmentation members and their average. Bounding boxes "
                "in scanner RAS+ mm.</p>"
                + html_table(
                    ordered,
                    ["subject", "split", "status", "review", *z_cols, *uz_cols, *value_cols],
                    flagged=flagged,
                ),
            ),
            (
                "Cohort summary",
                html_table(
                    summary_rows,
                    ["column", "n", "mean", "sd", "min", "p05", "median", "p95", "max"],
                ),
            ),
        ],
    )


def _calibration_section(calibration: Mapping) -> str:
    """The expected calibration error and the reliability bins as HTML."""
    rows = [
        {
            "confidence bin": f"{b['bin'][0]:.1f}–{b['bin'][1]:.1f}",
            "voxels": b["voxels"],
            "mean confidence": b["confidence"],
            "accuracy": b["accuracy"],
        }
        for b in calibration.get("bins", [])
    ]
    return (
        f"<p>Expected calibration error (ECE) of the top class's probability over every voxel "
        f"of the body crop of {calibration.get('n_subjects', 0)} validation subject(s), "
        f"test-time augmentation {html.escape(str(calibration.get('tta', '')))}: "
        f"<b>{_cell(calibration.get('ece'))[0]}</b> (0 is perfect; the reliability diagram is "
        "results/report/calibration.png).</p>"
        + html_table(rows, ["confidence bin", "voxels", "mean confidence", "accuracy"])
    )


def network_rows(network: Mapping) -> list[dict]:
    """One row per stage of a plan's ``network`` (``model.name: auto``): kernel, stride and
    features, and whether a deep-supervision head reads the stage's decoder output."""
    n = len(network["strides"])
    heads = int(network["deep_supr_num"])
    return [
        {
            "stage": i,
            "kernel": "×".join(map(str, network["kernel_size"][i])),
            "stride": "×".join(map(str, network["strides"][i])),
            "features": network["filters"][i],
            "output": "main" if i == 0 else ("deep supervision" if i <= heads else ""),
        }
        for i in range(n)
    ]


def run_page(
    config: Mapping,
    plan: Mapping,
    progress: Mapping,
    review: Sequence[Mapping],
    runtimes: Sequence[Mapping],
    calibration: Mapping | None = None,
    versions: Sequence[Mapping] = (),
    model: Mapping | None = None,
) -> str:
    """The run at a glance: progress, subjects to review, the model in use (``model``:
    :func:`cohortseg.workflow.registry.model_identity`: checkpoint, version, SHA-256), the
    calibration of the probabilities on the validation split (``calibration``:
    :func:`cohortseg.trust.calibration.calibration_summary`), the model versions compared
    (``versions``: rows of ``results/models/versions.tsv``), run time per rule, the plan and the
    configuration."""
    import yaml

    shown = shown_config(config)
    skipped = progress.get("skipped_by_reason", {})
    progress_rows = [{"subjects": k, "count": progress[k]} for k in PROGRESS if k in progress]
    progress_rows += [{"subjects": f"skipped: {k}", "count": v} for k, v in skipped.items()]
    plan_rows = [
        {"key": k, "value": json.dumps(v) if isinstance(v, list | dict) else v}
        for k, v in plan.items()
    ]
    return html_page(
        "cohortseg run",
        [
            ("Progress", html_table(progress_rows, ["subjects", "count"])),
            *(
                [
                    (
                        "Model in use",
                        html_table([dict(model)], ["version", "checkpoint", "model_sha256"]),
                    )
                ]
                if model
                else []
            ),
            (
                f"Flagged for review ({len(review)})",
                html_table(list(review), ["subject", "split", "why"])
                if review
                else "<p>No subject is flagged.</p>",
            ),
            *(
                [
                    (
                        "Calibration on the validation split",
                        _calibration_section(calibration),
                    )
                ]
                if calibration
                else []
            ),
            *(
                [
                    (
                        "Model versions: Dice per class on the fixed val and test splits",
                        html_table(list(versions), list(versions[0])),
                    )
                ]
                if versions
                else []
            ),
            (
                "Run time per rule",
                html_table(
                    list(runtimes),
                    ["rule", "jobs", "total_s", "mean_s", "max_s", "cpu_s", "max_rss_mb"],
                ),
            ),
            (
                "Preprocessing plan (results/plan/plan.json)",
                html_table(plan_rows, ["key", "value"]),
            ),
            *(
                [
                    (
                        f"Network: {html.escape(str(plan['network']['name']))} configured from "
                        "the plan (model.name auto)",
                        html_table(
                            network_rows(plan["network"]),
                            ["stage", "kernel", "stride", "features", "output"],
                        ),
                    )
                ]
                if "network" in plan
                else []
            ),
            (
                "Configuration (as run, overrides included)",
                f"<pre>{html.escape(yaml.safe_dump(shown, sort_keys=False))}</pre>",
            ),
        ],
    )
