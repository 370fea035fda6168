"""Per-subject segmentation metrics (MONAI's Dice and HD95, in mm) and class volumes (mL)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import torch
from monai.metrics import compute_dice, compute_hausdorff_distance

from cohortseg.core.errors import InvalidInputError
from cohortseg.core.geometry import check_same_grid, spacing_of, voxel_volume_ml
from cohortseg.core.io import load_nifti, parse_number


def one_hot(labels: np.ndarray, n_classes: int) -> torch.Tensor:
    """(X, Y, Z) (or (X, Y)) integer labels → (1, C, X, Y, Z) (or (1, C, X, Y)) float one-hot
    tensor."""
    t = torch.as_tensor(labels.astype(np.int64))
    hot = torch.nn.functional.one_hot(t, n_classes)
    return hot.permute(hot.ndim - 1, *range(hot.ndim - 1))[None].float()


def class_volumes_ml(labels: np.ndarray, affine: np.ndarray, n_classes: int) -> list[float]:
    """Volume of each foreground class 1..C-1 in mL (voxel count × voxel volume); for a 2D
    image (one slice) its area × the slice thickness (1 mm for PNG and TIFF images: mL × 1000
    = mm²)."""
    voxel_ml = voxel_volume_ml(affine)
    counts = np.bincount(labels.ravel(), minlength=n_classes)
    return [float(counts[c]) * voxel_ml for c in range(1, n_classes)]


def dice_hd95(
    prediction: np.ndarray, reference: np.ndarray, affine: np.ndarray, n_classes: int
) -> tuple[list[float], list[float]]:
    """Dice and 95th-percentile Hausdorff distance (mm) per foreground class.

    Both maps are (X, Y, Z) on the same grid. A class absent from both gets Dice 1 and HD95 0;
    absent from exactly one, Dice 0 and HD95 NaN. For 2D images (Z = 1) the distances are
    in-plane, between the outlines in the slice (in 3D every voxel of one slice would be on
    the surface).
    """
    spacing = spacing_of(affine).tolist()
    if prediction.shape[2] == 1:
        prediction, reference, spacing = prediction[..., 0], reference[..., 0], spacing[:2]
    pred, ref = one_hot(prediction, n_classes), one_hot(reference, n_classes)
    dice = compute_dice(pred, ref, include_background=False, ignore_empty=False)[0]
    hd = compute_hausdorff_distance(
        pred, ref, include_background=False, percentile=95, spacing=spacing
    )[0]
    dices, hds = [], []
    for c in range(n_classes - 1):
        in_pred, in_ref = bool(pred[0, c + 1].any()), bool(ref[0, c + 1].any())
        if not in_pred and not in_ref:
            dices.append(1.0)
            hds.append(0.0)
        elif in_pred != in_ref:
            dices.append(0.0)
            hds.append(math.nan)
        else:
            dices.append(float(dice[c]))
            hds.append(float(hd[c]))
    return dices, hds


def metric_columns(classes: Sequence[str]) -> list[str]:
    """Column names of the metrics table, in order."""
    cols = ["subject", "split"]
    cols += [f"dice_{c}" for c in classes]
    cols += [f"hd95_mm_{c}" for c in classes]
    cols += [f"volume_ml_{c}" for c in classes]
    return cols


def summarise(rows: Sequence[Mapping], classes: Sequence[str], worst: int = 5) -> dict:
    """Cohort summary: mean and median of each metric per split and class, and the subjects
    with the lowest mean Dice."""
    summary: dict = {"n_subjects": len(rows), "splits": {}}
    splits = sorted({r["split"] for r in rows})
    for split in splits + ["all"]:
        sel = [r for r in rows if split == "all" or r["split"] == split]
        entry: dict = {"n_subjects": len(sel)}
        for prefix in ("dice", "hd95_mm", "volume_ml"):
            for c in classes:
                vals = np.array([parse_number(r.get(f"{prefix}_{c}"), math.nan) for r in sel])
                vals = vals[np.isfinite(vals)]
                if vals.size:
                    entry[f"{prefix}_{c}"] = {
                        "mean": float(vals.mean()),
                        "median": float(np.median(vals)),
                        "n": int(vals.size),
                    }
        summary["splits"][split] = entry
    scored = []
    for r in rows:
        dices = [parse_number(r.get(f"dice_{c}")) for c in classes]
        if None not in dices:
            scored.append((float(np.mean(dices)), r["subject"]))
    summary["worst_subjects"] = [{"subject": s, "mean_dice": d} for d, s in sorted(scored)[:worst]]
    return summary


def _load_labels(path: str, subject: str, n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """A (X, Y, Z) uint8 label map (a file of any type that holds whole numbers, see
    :func:`cohortseg.core.io.load_nifti`) and its (4, 4) affine (mm), its values checked against
    the classes where it is read (the file may have been replaced since validation)."""
    labels, affine = load_nifti(path, subject, dtype=np.uint8)
    top = int(labels.max())
    if top >= n_classes:
        raise InvalidInputError(
            subject, path, f"label value {top} outside the configured classes 0..{n_classes - 1}"
        )
    return labels, affine


def evaluate_subject(
    subject: str,
    split: str,
    segmentation: str,
    label: str | None,
    classes: Sequence[str],
    affine_tolerance_mm: float = 1.0,
) -> dict:
    """One row of the metrics table: class volumes (mL) of the segmentation and, when the
    subject has a label, Dice and HD95 (mm) against it.

    The segmentation lies on the image's native grid; the label must lie on it too, its affine
    within ``affine_tolerance_mm`` (:func:`cohortseg.core.geometry.check_same_grid`).

    Raises
    ------
    InvalidInputError
        If a file cannot be read or the label is not on the segmentation's grid.
    """
    n_classes = len(classes) + 1
    pred, affine = _load_labels(segmentation, subject, n_classes)
    row: dict = {"subject": subject, "split": split}
    row.update(
        {
            f"volume_ml_{c}": v
            for c, v in zip(classes, class_volumes_ml(pred, affine, n_classes), strict=True)
        }
    )
    if label:
        ref, label_affine = _load_labels(label, subject, n_classes)
        check_same_grid(
            subject,
            pred.shape,
            affine,
            ref.shape,
            label_affine,
            label,
            affine_tolerance_mm,
            reference="segmentation",
        )
        dice, hd = dice_hd95(pred, ref, affine, n_classes)
        row.update({f"dice_{c}": d for c, d in zip(classes, dice, strict=True)})
        row.update({f"hd95_mm_{c}": h for c, h in zip(classes, hd, strict=True)})
    return row
