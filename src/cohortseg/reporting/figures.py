"""The report's figures: volume histograms and run times per rule."""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from cohortseg.core.colours import class_colour
from cohortseg.core.io import parse_number, read_tsv  # noqa: E402
from cohortseg.evaluation.stats import robust_centre_scale
from cohortseg.viz.figures import save_figure

log = logging.getLogger(__name__)


def plot_volume_histograms(
    rows: Sequence[Mapping],
    classes: Sequence[str],
    outlier_z: float,
    path: str | os.PathLike[str],
) -> None:
    """Histogram of each class's volume (mL) over the segmented subjects, with the median and
    the outlier limits (median ± ``outlier_z`` robust SD); flagged subjects in red."""
    n = len(classes)
    ncols = min(n, 3)
    nrows = math.ceil(n / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.5 * ncols, 3.6 * nrows), squeeze=False)
    measured = [r for r in rows if r.get("status") != "failed"]
    for ax, (value, c) in zip(axes.ravel(), enumerate(classes, start=1), strict=False):
        vols = np.array([parse_number(r.get(f"volume_ml_{c}"), math.nan) for r in measured])
        ok = np.isfinite(vols)
        med, scale = robust_centre_scale(vols)
        ax.hist(
            vols[ok], bins=min(30, max(5, int(ok.sum()) // 2)), color=class_colour(value), alpha=0.8
        )
        if np.isfinite(med):
            ax.axvline(med, color="black", lw=1, label="median")
            for sign in (-1, 1):
                ax.axvline(
                    med + sign * outlier_z * scale,
                    color="red",
                    ls="--",
                    lw=1,
                    label=f"|z| = {outlier_z:g}" if sign > 0 else None,
                )
        flagged = [
            (v, r["subject"])
            for v, r in zip(vols, measured, strict=True)
            if np.isfinite(v) and abs(parse_number(r.get(f"volume_z_{c}"), math.nan)) > outlier_z
        ]
        for v, subject in flagged[:8]:
            ax.annotate(
                subject,
                (v, 0),
                xytext=(0, 12),
                textcoords="offset points",
                rotation=90,
                color="red",
                fontsize=7,
                ha="center",
                arrowprops={"arrowstyle": "-", "color": "red"},
            )
        ax.set(
            xlabel=f"{c} volume (mL)",
            ylabel="subjects",
            title=f"{c}: n={int(ok.sum())}, {len(flagged)} flagged",
        )
        ax.legend(fontsize=7)
    for ax in axes.ravel()[n:]:
        ax.set_visible(False)
    fig.tight_layout()
    save_figure(fig, path)


def read_benchmarks(root: str | os.PathLike[str]) -> list[dict]:
    """Run time per rule from Snakemake's ``benchmark:`` files under ``root``.

    A file ``root/{rule}.tsv`` or ``root/{rule}/….tsv`` is one job of ``rule``. Returns one dict
    per rule (most total time first): ``rule``, ``jobs``, ``total_s``, ``mean_s``, ``max_s``,
    ``cpu_s`` and ``max_rss_mb`` (NaN where Snakemake could not measure it).
    """
    root = Path(root)
    per_rule: dict[str, list[dict[str, str]]] = {}
    for path in sorted(root.rglob("*.tsv")):
        rel = path.relative_to(root)
        rule = rel.stem if len(rel.parts) == 1 else rel.parts[0]
        try:
            per_rule.setdefault(rule, []).extend(read_tsv(path))
        except (OSError, UnicodeDecodeError) as exc:
            log.warning("%s: cannot read benchmark: %s", path, exc)
    out = []
    for rule, records in per_rule.items():
        s = np.array([parse_number(r.get("s"), math.nan) for r in records])
        cpu = np.array([parse_number(r.get("cpu_time"), math.nan) for r in records])
        rss = np.array([parse_number(r.get("max_rss"), math.nan) for r in records])
        out.append(
            {
                "rule": rule,
                "jobs": len(records),
                "total_s": float(np.nansum(s)),
                "mean_s": float(np.nanmean(s)) if np.isfinite(s).any() else math.nan,
                "max_s": float(np.nanmax(s)) if np.isfinite(s).any() else math.nan,
                "cpu_s": float(np.nansum(cpu)),
                "max_rss_mb": float(np.nanmax(rss)) if np.isfinite(rss).any() else math.nan,
            }
        )
    return sorted(out, key=lambda r: (-r["total_s"], r["rule"]))


def plot_runtimes(runtimes: Sequence[Mapping], path: str | os.PathLike[str]) -> None:
    """Horizontal bars: total run time (s) of each rule's jobs, labelled with the job count and
    the longest job."""
    rows = list(runtimes)[::-1]
    fig, ax = plt.subplots(figsize=(8, 0.8 + 0.4 * max(1, len(rows))))
    names = [r["rule"] for r in rows]
    totals = [r["total_s"] for r in rows]
    ax.barh(names, totals, color="tab:blue")
    for k, r in enumerate(rows):
        ax.text(
            r["total_s"],
            k,
            f"  {r['jobs']} job(s), longest {r['max_s']:.1f} s",
            va="center",
            fontsize=8,
        )
    ax.set(
        xlabel="total run time of the rule's jobs (s, wall clock)",
        title="Run time per rule (benchmark files)",
    )
    ax.set_xlim(0, max(totals + [1.0]) * 1.45)
    fig.tight_layout()
    save_figure(fig, path)
