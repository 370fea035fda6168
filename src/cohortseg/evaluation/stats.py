"""Per-subject shape statistics of segmentations and the cohort's outliers by robust z-score.

For every class: volume (mL), surface area (mm², of the lightly smoothed marching-cubes surface
in world coordinates), number of connected components (26-connectivity) and the world bounding
box (scanner RAS+, mm) that contains every voxel of the class.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping, Sequence

import numpy as np
from scipy import ndimage

from cohortseg.core.errors import InvalidInputError
from cohortseg.core.geometry import crop_to_mask, voxel_volume_ml, world_bounding_box
from cohortseg.core.io import load_nifti, parse_number
from cohortseg.core.redact import show_path
from cohortseg.evaluation.meshes import surface_area_mm2, surface_mesh
from cohortseg.inference.uncertainty import uncertainty_columns

log = logging.getLogger(__name__)


# Taubin passes before measuring surface area: the raw marching-cubes surface of a voxelised
# sphere overestimates its area by about 9 %, after 10 passes by about 1.5 %.
SURFACE_SMOOTHING_ITERATIONS = 10


# Consistency constant: 1.4826 × MAD estimates the standard deviation of normal data.
MAD_TO_SD = 1.4826


# Mean absolute deviation → standard deviation of normal data (sqrt(pi / 2)), used when MAD = 0.
MEANAD_TO_SD = 1.253314


AXES = ("x", "y", "z")


# The progress counts of the summary, in reading order.
PROGRESS = ("subjects", "segmented", "empty", "failed", "skipped")


def class_statistics(labels: np.ndarray, affine: np.ndarray, value: int) -> dict:
    """Statistics of one class (label ``value``) of a (X, Y, Z) label map with its affine.

    Returns ``volume_ml``, ``surface_mm2``, ``components`` and ``bbox_{min,max}_{x,y,z}_mm``
    (NaN when the class is absent). For a 2D image (one slice, Z = 1) the volume is the area ×
    the slice thickness and the surface that of the one-slice slab (both faces and the rim).
    """
    mask = np.asarray(labels) == value
    n_voxels = int(mask.sum())
    out: dict = {"volume_ml": n_voxels * voxel_volume_ml(affine)}
    if n_voxels:
        mask, affine = crop_to_mask(mask, affine)
        vertices, faces = surface_mesh(mask, affine, SURFACE_SMOOTHING_ITERATIONS)
        out["surface_mm2"] = surface_area_mm2(vertices, faces)
        _, out["components"] = ndimage.label(mask, structure=np.ones((3, 3, 3)))
        lo, hi = world_bounding_box(mask, affine)
    else:
        out["surface_mm2"], out["components"] = 0.0, 0
        lo = hi = np.full(3, math.nan)
    for k, axis in enumerate(AXES):
        out[f"bbox_min_{axis}_mm"] = float(lo[k])
        out[f"bbox_max_{axis}_mm"] = float(hi[k])
    return out


PER_CLASS = (
    ["volume_ml", "surface_mm2", "components"]
    + [f"bbox_min_{a}_mm" for a in AXES]
    + [f"bbox_max_{a}_mm" for a in AXES]
)


def stats_columns(classes: Sequence[str], with_outliers: bool = True) -> list[str]:
    """Column names of the statistics table, in order (``with_outliers``: the cohort's
    robust z-scores of the volumes and uncertainties and the ``review`` column, known only
    after the join)."""
    cols = ["subject", "split", "status"]
    cols += [f"{q}_{c}" for q in PER_CLASS for c in classes]
    cols += uncertainty_columns(classes)
    if with_outliers:
        cols += [f"{q}_z_{c}" for q in ("volume", "uncertainty") for c in classes] + ["review"]
    return cols + ["image", "segmentation", "problem"]


def subject_statistics(
    subject: str,
    split: str,
    segmentation: str | os.PathLike[str],
    image: str,
    classes: Sequence[str],
) -> dict:
    """One row of the statistics table for one subject's segmentation.

    ``status`` is ``ok``, ``empty`` (no foreground voxel at all) or ``failed`` (the
    segmentation cannot be read; ``problem`` says why, the statistics are left empty). The
    ``image`` column is ``<image>`` in pseudonymised runs (:func:`cohortseg.core.redact.redacting`).
    """
    row: dict = {
        "subject": subject,
        "split": split,
        "image": show_path(image, "image"),  # input paths stay out of pseudonymised tables
        "segmentation": str(segmentation),
    }
    try:
        labels, affine = load_nifti(segmentation, subject, dtype=np.uint8)
    except InvalidInputError as exc:
        log.error("%s", exc)
        return {**row, "status": "failed", "problem": exc.problem}
    for value, name in enumerate(classes, start=1):
        for key, v in class_statistics(labels, affine, value).items():
            row[f"{key}_{name}"] = v
    row["status"] = "ok" if labels.any() else "empty"
    if row["status"] == "empty":
        log.warning("%s: %s has no foreground voxel", subject, segmentation)
    return row


def robust_centre_scale(values: Sequence[float]) -> tuple[float, float]:
    """Median and robust standard deviation (1.4826 × MAD) of the finite values.

    When more than half the values are equal (MAD = 0) the scale falls back to 1.2533 × the mean
    absolute deviation from the median (0 when all values are equal). (NaN, NaN) without values.
    """
    x = np.asarray(values, dtype=np.float64)
    x = x[np.isfinite(x)]
    if not x.size:
        return math.nan, math.nan
    med = float(np.median(x))
    dev = np.abs(x - med)
    scale = MAD_TO_SD * float(np.median(dev))
    if scale == 0:
        scale = MEANAD_TO_SD * float(dev.mean())
    return med, scale


def robust_z(values: Sequence[float]) -> np.ndarray:
    """Robust z-scores (x - median) / scale, with :func:`robust_centre_scale`; NaN stays NaN
    and values all equal give z = 0."""
    x = np.asarray(values, dtype=np.float64)
    med, scale = robust_centre_scale(x)
    with np.errstate(invalid="ignore"):
        return np.where(np.isfinite(x), (x - med) / scale if scale > 0 else 0.0, math.nan)


def flag_outliers(rows: Sequence[dict], classes: Sequence[str], outlier_z: float) -> list[dict]:
    """Add the cohort's ``volume_z_{class}`` and ``uncertainty_z_{class}`` to each row and
    ``review``: what makes the subject a candidate for review (classes whose volume |z| exceeds
    ``outlier_z``, classes whose uncertainty z exceeds it: only unusually high uncertainty is a
    reason, or an empty or failed segmentation), comma-separated; empty when nothing is
    unusual. Returns new rows."""
    rows = [dict(r) for r in rows]
    measured = [r for r in rows if r.get("status") != "failed"]
    reasons: dict[int, list[str]] = {id(r): [] for r in rows}
    for c in classes:
        zs = robust_z([parse_number(r.get(f"volume_ml_{c}"), math.nan) for r in measured])
        for r, z in zip(measured, zs, strict=True):
            r[f"volume_z_{c}"] = float(z)
            if np.isfinite(z) and abs(z) > outlier_z:
                reasons[id(r)].append(f"{c} volume z={z:+.1f}")
    for c in classes:
        zs = robust_z([parse_number(r.get(f"uncertainty_{c}"), math.nan) for r in measured])
        for r, z in zip(measured, zs, strict=True):
            r[f"uncertainty_z_{c}"] = float(z)
            if np.isfinite(z) and z > outlier_z:
                reasons[id(r)].append(f"{c} uncertainty z={z:+.1f}")
    for r in rows:
        if r.get("status") in ("empty", "failed"):
            reasons[id(r)].insert(0, f"{r['status']} segmentation")
        r["review"] = ", ".join(reasons[id(r)])
    return rows


def summarise_stats(
    rows: Sequence[Mapping],
    classes: Sequence[str],
    outlier_z: float,
    cohort_size: int,
    skipped: Mapping[str, int],
) -> dict:
    """Cohort summary of the statistics table.

    Parameters
    ----------
    rows
        The joined table, after :func:`flag_outliers`.
    classes
        Foreground class names.
    outlier_z
        The robust z threshold the rows were flagged with.
    cohort_size
        Subjects in the sample sheet (or demo cohort).
    skipped
        Subjects of the cohort not segmented, by reason (e.g. ``{"split not in
        inference.splits": 3}``).

    Returns
    -------
    dict
        ``progress`` (subjects in the cohort, segmented, of which empty, failed, skipped),
        ``columns`` (n, mean, sd, min, 5th percentile, median, 95th percentile, max of each
        numeric column, uncertainties included, over the segmented subjects), ``review``
        (flagged subjects and why) and ``outlier_z``.
    """
    status = [r.get("status") for r in rows]
    progress = {
        "subjects": int(cohort_size),
        "segmented": sum(s in ("ok", "empty") for s in status),
        "empty": status.count("empty"),
        "failed": status.count("failed"),
        "skipped": int(sum(skipped.values())),
        "skipped_by_reason": {k: int(v) for k, v in skipped.items() if v},
    }
    measured = [r for r in rows if r.get("status") != "failed"]
    columns = {}
    for col in [f"{q}_{c}" for q in PER_CLASS for c in classes] + uncertainty_columns(classes):
        x = np.array([parse_number(r.get(col), math.nan) for r in measured])
        x = x[np.isfinite(x)]
        if not x.size:
            columns[col] = {"n": 0}
            continue
        p5, med, p95 = np.percentile(x, [5, 50, 95])
        columns[col] = {
            "n": int(x.size),
            "mean": float(x.mean()),
            "sd": float(x.std(ddof=1)) if x.size > 1 else 0.0,
            "min": float(x.min()),
            "p05": float(p5),
            "median": float(med),
            "p95": float(p95),
            "max": float(x.max()),
        }
    review = [
        {"subject": r["subject"], "split": r.get("split", ""), "why": r["review"]}
        for r in rows
        if r.get("review")
    ]
    return {
        "progress": progress,
        "outlier_z": float(outlier_z),
        "columns": columns,
        "review": review,
    }
