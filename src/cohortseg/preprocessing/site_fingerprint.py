"""The federated plan's inputs: each site's fingerprint, made of aggregates only (no voxel, no
subject id), and the coordinator's merge of them into a fingerprint that
:func:`cohortseg.preprocessing.plan.make_plan` accepts.

What a site shares, and how it merges:

- ``spacings_mm`` and ``shapes``: each training subject's canonical spacing and shape (as
  nnU-Net shares them), sorted so that their order tells nothing of the sample sheet. Merged by
  concatenation, so the target spacing, median shape and patch size equal the central plan's
  exactly (medians and maxima do not depend on order).
- intensity of the voxels labelled foreground: ``count``, ``mean`` and ``m2`` (the sum of
  squared deviations from the mean: the same information as count, sum and sum of squares,
  without the cancellation of ``sum_sq/n - mean**2``), merged by Chan et al.'s pairwise update,
  so the mean and standard deviation equal the central ones to float64 rounding; ``min`` and
  ``max``, merged exactly; and a histogram of log-spaced bins (DDSketch, Masson et al. 2019)
  for the percentiles. Bin ``i`` of the positive values holds (γ^(i-1), γ^i] with
  γ = (1 + α)/(1 - α), and is read as 2γ^i/(γ + 1), within a relative ``α`` of every value in
  it (negative values mirrored, zeros counted apart). Bins of every site coincide, so merging
  adds counts, and a merged percentile is within ``α × max(|x_k|, |x_k+1|)`` of numpy's
  (linear interpolation between the order statistics x_k and x_k+1 of all sites' voxels).
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np

from cohortseg.core.cohort import Subject
from cohortseg.core.errors import CohortsegError
from cohortseg.core.geometry import reorient, spacing_of
from cohortseg.core.io import load_nifti, read_json

log = logging.getLogger(__name__)


#: Relative error α of the percentiles read from a merged histogram (0.1 %).
PERCENTILE_RELATIVE_ERROR = 1e-3


#: The percentiles a plan holds, by their key in ``plan["intensity"]``.
PLAN_PERCENTILES = {"percentile_00_5": 0.5, "percentile_50_0": 50.0, "percentile_99_5": 99.5}


def _gamma(relative_error: float) -> float:
    return (1 + relative_error) / (1 - relative_error)


def intensity_summary(
    values: np.ndarray, relative_error: float = PERCENTILE_RELATIVE_ERROR
) -> dict:
    """The mergeable summary of intensities ``values`` (any shape; float64 is used).

    Returns a JSON-able dict: ``count``, ``mean``, ``m2`` (sum of squared deviations), ``min``,
    ``max`` and ``histogram`` (``relative_error``, ``zero`` count, and ``positive`` and
    ``negative`` as ``[bin indices, counts]`` of |value|'s log-spaced bins).
    """
    v = np.asarray(values, np.float64).ravel()
    hist: dict = {"relative_error": float(relative_error), "zero": int(np.sum(v == 0))}
    log_gamma = math.log(_gamma(relative_error))
    for name, part in (("positive", v[v > 0]), ("negative", -v[v < 0])):
        bins, counts = np.unique(
            np.ceil(np.log(part) / log_gamma).astype(np.int64), return_counts=True
        )
        hist[name] = [bins.tolist(), counts.tolist()]
    if not v.size:
        return {"count": 0, "mean": 0.0, "m2": 0.0, "min": 0.0, "max": 0.0, "histogram": hist}
    mean = float(v.mean())
    return {
        "count": int(v.size),
        "mean": mean,
        "m2": float(np.sum((v - mean) ** 2)),
        "min": float(v.min()),
        "max": float(v.max()),
        "histogram": hist,
    }


def merge_intensity(a: Mapping, b: Mapping) -> dict:
    """Two :func:`intensity_summary` results as one, as if made from both sets of values.

    Raises ``CohortsegError`` when their histograms have different bins."""
    if a["histogram"]["relative_error"] != b["histogram"]["relative_error"]:
        raise CohortsegError(
            "site fingerprints made with different percentile bins (relative_error"
            f" {a['histogram']['relative_error']} and {b['histogram']['relative_error']});"
            " make them again with the same cohortseg version"
        )
    if not b["count"]:
        return dict(a)
    if not a["count"]:
        return dict(b)
    n = a["count"] + b["count"]
    delta = b["mean"] - a["mean"]
    hist = {"relative_error": a["histogram"]["relative_error"]}
    hist["zero"] = a["histogram"]["zero"] + b["histogram"]["zero"]
    for name in ("positive", "negative"):
        counts: dict[int, int] = {}
        for bins, ns in (a["histogram"][name], b["histogram"][name]):
            for i, k in zip(bins, ns, strict=True):
                counts[int(i)] = counts.get(int(i), 0) + int(k)
        ordered = sorted(counts)
        hist[name] = [ordered, [counts[i] for i in ordered]]
    return {
        "count": n,
        "mean": a["mean"] + delta * b["count"] / n,
        "m2": a["m2"] + b["m2"] + delta**2 * a["count"] * b["count"] / n,
        "min": min(a["min"], b["min"]),
        "max": max(a["max"], b["max"]),
        "histogram": hist,
    }


def _bins_in_order(hist: Mapping) -> tuple[np.ndarray, np.ndarray]:
    """Each bin's representative value and count, from the most negative bin up."""
    gamma = _gamma(hist["relative_error"])
    neg_bins, neg_counts = (np.asarray(x) for x in hist["negative"])
    pos_bins, pos_counts = (np.asarray(x) for x in hist["positive"])
    neg_order = np.argsort(-neg_bins, kind="stable")
    values = np.concatenate(
        [
            -2 * gamma ** neg_bins[neg_order].astype(float) / (gamma + 1),
            [0.0],
            2 * gamma ** pos_bins.astype(float) / (gamma + 1),
        ]
    )
    counts = np.concatenate([neg_counts[neg_order], [hist["zero"]], pos_counts]).astype(np.int64)
    return values, counts


def summary_percentile(summary: Mapping, q: float) -> float:
    """The ``q``-th percentile (0..100) of the summarised values, as ``numpy.percentile``
    (linear) computes it, with each order statistic read from its histogram bin (so within a
    relative ``relative_error`` of it) and clipped to the exact ``min`` and ``max``."""
    n = summary["count"]
    if not n:
        return 0.0
    values, counts = _bins_in_order(summary["histogram"])
    ends = np.cumsum(counts)  # the order statistics x_0 .. x_n-1; bin j holds ranks < ends[j]
    h = (n - 1) * q / 100
    k = math.floor(h)
    ranks = [k, min(k + 1, n - 1)]
    x = [float(values[np.searchsorted(ends, r, side="right")]) for r in ranks]
    estimate = x[0] + (h - k) * (x[1] - x[0])
    return float(min(max(estimate, summary["min"]), summary["max"]))


def _measure(subject: Subject) -> tuple[list[float], list[int], np.ndarray]:
    """A subject's canonical spacing (mm), shape (voxels) and foreground intensities."""
    image, affine = load_nifti(subject.image, subject.subject)
    canon, canon_affine, _ = reorient(image, affine)
    foreground = np.zeros(0)
    if subject.label:
        label, _ = load_nifti(subject.label, subject.subject, dtype=np.uint8)
        foreground = image[label > 0]
    return spacing_of(canon_affine).tolist(), list(canon.shape), foreground


def site_fingerprint(
    subjects: Iterable[Subject], relative_error: float = PERCENTILE_RELATIVE_ERROR
) -> dict:
    """One site's fingerprint of its training ``subjects``: aggregates only.

    Returns a JSON-able dict: ``n_subjects``; ``spacings_mm`` and ``shapes`` (canonical RAS
    axes, one pair per subject, sorted, no ids); ``intensity``, the
    :func:`intensity_summary` of every voxel labelled foreground.
    """
    pairs, intensity = [], intensity_summary(np.zeros(0), relative_error)
    for s in subjects:
        spacing, shape, foreground = _measure(s)
        pairs.append((spacing, shape))
        intensity = merge_intensity(intensity, intensity_summary(foreground, relative_error))
    pairs.sort()
    log.info(
        "site fingerprint of %d subject(s), %d foreground voxels", len(pairs), intensity["count"]
    )
    return {
        "n_subjects": len(pairs),
        "spacings_mm": [p[0] for p in pairs],
        "shapes": [p[1] for p in pairs],
        "intensity": intensity,
    }


def site_of_fingerprint(path: str | os.PathLike[str]) -> str:
    """The site a fingerprint file is of: ``{site}`` of ``…/{site}/fingerprint.json`` (the
    workflow's ``results/sites/{site}/``), else the file's name less ``.json``
    (``north.json``, as a site may send it)."""
    p = Path(path)
    return p.parent.name if p.name == "fingerprint.json" else p.name.removesuffix(".json")


def read_site_fingerprints(paths: Iterable[str | os.PathLike[str]]) -> dict[str, dict]:
    """Site (:func:`site_of_fingerprint`) → its fingerprint, read from ``paths``. Raises
    ``CohortsegError`` when two files are of the same site."""
    out: dict[str, dict] = {}
    for path in paths:
        site = site_of_fingerprint(path)
        if site in out:
            raise CohortsegError(
                f"two fingerprints of site {site!r} ({path} and another): name each site's file"
                " {site}.json or keep it in a folder named after the site"
            )
        out[site] = read_json(path)
    return out


def merge_fingerprints(sites: Mapping[str, Mapping] | Sequence[Mapping]) -> dict:
    """The coordinator's fingerprint of all sites (site → :func:`site_fingerprint`, or a list
    of them), in the form :func:`cohortseg.preprocessing.plan.fingerprint` returns, less subject
    ids.

    ``intensity`` has the plan's keys: ``mean`` and ``std`` (population, as ``numpy.std``) of
    every foreground voxel of every site, and the 0.5/50/99.5 percentiles read from the merged
    histogram (:func:`summary_percentile`); ``intensity_summary`` keeps the merged summary.
    Raises ``CohortsegError`` when there is no site or no training subject.
    """
    named = dict(sites) if isinstance(sites, Mapping) else dict(enumerate(sites))
    if not any(fp["n_subjects"] for fp in named.values()):
        raise CohortsegError(
            "no site fingerprint holds a training subject: the plan needs at least one"
            " (check the sample sheet's split and site columns)"
        )
    pairs, merged = [], None
    for fp in named.values():
        pairs += zip(fp["spacings_mm"], fp["shapes"], strict=True)
        merged = fp["intensity"] if merged is None else merge_intensity(merged, fp["intensity"])
    pairs.sort()
    n = merged["count"]
    intensity = {
        "mean": float(merged["mean"]),
        "std": float(math.sqrt(merged["m2"] / n)) if n else 0.0,
        **{key: summary_percentile(merged, q) for key, q in PLAN_PERCENTILES.items()},
    }
    return {
        "sites": {str(k): int(fp["n_subjects"]) for k, fp in named.items()},
        "spacings_mm": [p[0] for p in pairs],
        "shapes": [p[1] for p in pairs],
        "intensity": intensity,
        "intensity_summary": merged,
    }
