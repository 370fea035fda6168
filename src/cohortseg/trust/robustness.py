"""Segmentation quality and uncertainty under perturbation: labelled subjects copied with graded
perturbations (:mod:`cohortseg.trust.perturbations`), segmented by the shard pipeline, and scored
(Dice per class against the perturbed label, per-subject uncertainty, time per volume). What the
robustness and uncertainty benchmarks and the uncertainty test share."""

from __future__ import annotations

import math
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from cohortseg.core.io import load_nifti, save_nifti
from cohortseg.inference.shard import ShardItem, segment_shard
from cohortseg.trust.perturbations import Perturbation


def perturbed_copies(
    subjects: Sequence[tuple[str, str, str]],
    perturbations: Mapping[str, Perturbation],
    strengths: Sequence[float],
    out_dir: str | os.PathLike[str],
    seed: int = 0,
) -> list[dict]:
    """Write each (subject, image path, label path) once unperturbed and once per perturbation
    and non-zero strength, as NIfTI on the subject's grid under ``out_dir``.

    Returns one dict per copy: ``subject`` (the copy's id), ``source``, ``perturbation``
    (``none`` for the clean copy), ``strength`` (0 to 1), ``image`` and ``label``.
    """
    out = Path(out_dir)
    copies = []
    for k, (subject, image_path, label_path) in enumerate(subjects):
        image, affine = load_nifti(image_path, subject)
        label, _ = load_nifti(label_path, subject, dtype=np.uint8)
        variants = [("none", 0.0, image, label)]
        for name, perturb in perturbations.items():
            for strength in (s for s in strengths if s > 0):
                variants.append((name, float(strength), *perturb(image, label, strength, seed + k)))
        for name, strength, img, lab in variants:
            copy_id = subject if name == "none" else f"{subject}_{name}_{strength:g}"
            paths = {
                "image": out / f"{copy_id}_image.nii.gz",
                "label": out / f"{copy_id}_label.nii.gz",
            }
            save_nifti(paths["image"], img, affine, dtype=np.float32)
            save_nifti(paths["label"], lab, affine, dtype=np.uint8)
            copies.append(
                {
                    "subject": copy_id,
                    "source": subject,
                    "perturbation": name,
                    "strength": strength,
                    **{k: str(v) for k, v in paths.items()},
                }
            )
    return copies


def dice_per_class(prediction: np.ndarray, truth: np.ndarray, n_classes: int) -> list[float]:
    """Dice of classes 1 … ``n_classes`` - 1 between two label maps of one grid (1 where both
    lack the class)."""
    out = []
    for value in range(1, n_classes):
        p, t = prediction == value, truth == value
        total = int(p.sum()) + int(t.sum())
        out.append(2.0 * int((p & t).sum()) / total if total else 1.0)
    return out


def segment_and_score(
    checkpoint: str,
    copies: Sequence[Mapping],
    inference: Mapping,
    classes: Sequence[str],
    out_dir: str | os.PathLike[str],
) -> tuple[list[dict], float]:
    """Segment ``copies`` (from :func:`perturbed_copies`) as one shard and score each.

    Returns the copies' rows with ``dice_{class}``, ``uncertainty_{class}`` and
    ``tta_disagreement_{class}`` added, plus ``mean_dice`` and ``mean_uncertainty`` (over the
    classes with a score), and the wall time per volume (s) of the shard's segmentation.
    """
    out = Path(out_dir)
    items = [
        ShardItem(c["subject"], c["image"], str(out / f"{c['subject']}_seg.nii.gz")) for c in copies
    ]
    start = time.perf_counter()
    failures = segment_shard(checkpoint, items, inference)
    seconds = (time.perf_counter() - start) / max(1, len(items))
    if failures:
        raise RuntimeError(f"{len(failures)} perturbed copies failed: {failures[0]}")
    rows = []
    for copy, item in zip(copies, items, strict=True):
        prediction, _ = load_nifti(item.output, item.subject, dtype=np.uint8)
        truth, _ = load_nifti(copy["label"], item.subject, dtype=np.uint8)
        dice = dice_per_class(prediction, truth, len(classes) + 1)
        row = {**copy, **item.uncertainty}
        row.update({f"dice_{c}": d for c, d in zip(classes, dice, strict=True)})
        row["mean_dice"] = float(np.mean(dice))
        scores = [item.uncertainty[f"uncertainty_{c}"] for c in classes]
        finite = [s for s in scores if math.isfinite(s)]
        row["mean_uncertainty"] = float(np.mean(finite)) if finite else math.nan
        rows.append(row)
    return rows, seconds


def dice_by_strength(rows: Sequence[Mapping], classes: Sequence[str]) -> list[dict]:
    """Mean Dice (per class and over the classes) and mean uncertainty per perturbation and
    strength over the subjects; the clean copies are every perturbation's strength 0.

    Returns rows ``perturbation``, ``strength``, ``subjects``, ``mean_dice``, ``dice_{class}``,
    ``mean_uncertainty``, sorted by perturbation, then strength.
    """
    clean = [r for r in rows if r["perturbation"] == "none"]
    names = sorted({r["perturbation"] for r in rows} - {"none"})
    out = []
    for name in names:
        strengths = sorted({float(r["strength"]) for r in rows if r["perturbation"] == name})
        for strength in [0.0, *strengths]:
            group = (
                clean
                if strength == 0
                else [
                    r
                    for r in rows
                    if r["perturbation"] == name and float(r["strength"]) == strength
                ]
            )
            entry = {"perturbation": name, "strength": strength, "subjects": len(group)}
            for key in ["mean_dice", *(f"dice_{c}" for c in classes), "mean_uncertainty"]:
                entry[key] = float(np.nanmean([r[key] for r in group])) if group else math.nan
            out.append(entry)
    return out


def plot_robustness(table: Sequence[Mapping], title: str, path: str | os.PathLike[str]) -> None:
    """Mean Dice against perturbation strength, one line per perturbation, beside the mean
    uncertainty against strength, as a PNG (:func:`dice_by_strength` rows)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from cohortseg.trust.perturbations import MAXIMUM
    from cohortseg.viz.figures import save_figure

    fig, (ax_dice, ax_unc) = plt.subplots(1, 2, figsize=(11, 4.2))
    for name in sorted({r["perturbation"] for r in table}):
        pts = [r for r in table if r["perturbation"] == name]
        strengths = [r["strength"] for r in pts]
        label = f"{name} (1 = {_maximum(name, MAXIMUM)})"
        ax_dice.plot(strengths, [r["mean_dice"] for r in pts], marker="o", label=label)
        ax_unc.plot(strengths, [r["mean_uncertainty"] for r in pts], marker="o", label=name)
    ax_dice.set(xlabel="strength", ylabel="mean Dice over the classes", ylim=(0, 1))
    ax_dice.set_title(title, fontsize=9)
    ax_dice.legend(fontsize=7, loc="lower left")
    ax_unc.set(xlabel="strength", ylabel="mean uncertainty (normalised entropy)")
    ax_unc.set_title("Per-subject uncertainty", fontsize=9)
    fig.tight_layout()
    save_figure(fig, path)


def _maximum(name: str, maximum: Mapping[str, float]) -> str:
    """What strength 1 of perturbation ``name`` means, for a legend."""
    units = {
        "noise": "σ {} SD",
        "bias_field": "gain e^±{}",
        "intensity_scale": "× (1 + {})",
        "gamma": "γ 1 + {}",
        "resolution_loss": "{} voxels",
        "rotation": "{}°",
        "blur": "σ {} voxels",
        "contrast_shift": "{} SD",
    }
    key = "rotation_deg" if name == "rotation" else name
    return units.get(name, "{}").format(f"{maximum.get(key, math.nan):g}")


def degraded_above_clean(rows: Sequence[Mapping], score: str = "mean_uncertainty") -> float:
    """Share of degraded copies whose ``score`` is above their clean source's."""
    clean = {r["source"]: r[score] for r in rows if r["perturbation"] == "none"}
    pairs = [r[score] > clean[r["source"]] for r in rows if r["perturbation"] != "none"]
    return float(np.mean(pairs)) if pairs else math.nan
