"""The review package: which subjects a person should correct, and why, laid out for 3D Slicer
(the image and the predicted segmentation as a ``.seg.nrrd``) and as a MONAI Label datastore
(the image, and the prediction under ``labels/original/``; Slicer's MONAI Label extension
submits a correction to ``labels/final/``).

Layout under the review folder (``results/review``)::

    review.tsv                                 subject, split, why, image, segmentation
    slicer/{subject}.nii.gz                    the image, as read by the pipeline
    slicer/{subject}.seg.nrrd                  the prediction: one named, coloured segment per class
    datastore/{subject}.nii.gz                 the same image (a hard link where possible)
    datastore/labels/original/{subject}.nii.gz the prediction as a label map
    datastore/labels/final/                    where MONAI Label puts submitted corrections: a
                                               link to corrections.dir, outside results/
"""

from __future__ import annotations

import logging
import math
import os
import shutil
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np

from cohortseg.annotation.slicer import write_seg_nrrd
from cohortseg.core.geometry import check_same_grid
from cohortseg.core.io import load_nifti, parse_number, save_nifti, write_tsv

log = logging.getLogger(__name__)


COLUMNS = ("subject", "split", "why", "image", "segmentation")


def select_review_subjects(
    stats_rows: Sequence[Mapping],
    metric_rows: Sequence[Mapping],
    classes: Sequence[str],
    worst: int,
    subjects: Iterable[str] = (),
) -> list[dict]:
    """Which subjects go to review, and why.

    Every subject ``stats.tsv`` flags (its ``review`` column: a class volume with |robust z|
    above ``report.outlier_z``, an empty or failed segmentation), the ``worst`` subjects with
    the lowest mean Dice over the classes (labelled subjects only), and every subject listed in
    ``subjects`` (``review.subjects``). Failed segmentations are listed but cannot be shown.

    Returns
    -------
    list of dict
        ``subject``, ``split``, ``why`` (reasons joined by "; "), in ``stats_rows`` order.
    """
    rows = {r["subject"]: r for r in stats_rows}
    chosen: dict[str, list[str]] = {}
    for s, r in rows.items():
        if r.get("review"):
            chosen.setdefault(s, []).append(f"QC: {r['review']}")
    scored = []
    for r in metric_rows:
        dice = [parse_number(r.get(f"dice_{c}"), math.nan) for c in classes]
        if r["subject"] in rows and all(np.isfinite(dice)):  # type: ignore[arg-type]
            scored.append((float(np.mean(dice)), r["subject"]))  # type: ignore[arg-type]
    for mean_dice, s in sorted(scored)[:worst]:
        chosen.setdefault(s, []).append(f"low Dice (mean {mean_dice:.3f})")
    for s in subjects:
        if s in rows:
            chosen.setdefault(s, []).append("listed in review.subjects")
        else:
            log.warning("review.subjects: %s is not a segmented subject of this cohort", s)
    return [
        {"subject": s, "split": rows[s].get("split", ""), "why": "; ".join(chosen[s])}
        for s in rows
        if s in chosen
    ]


def _link_or_copy(source: Path, target: Path) -> None:
    """``target`` as a hard link to ``source`` (a copy across file systems), replacing it."""
    tmp = target.with_name(f".{target.name}.link")
    tmp.unlink(missing_ok=True)
    try:
        os.link(source, tmp)
    except OSError:
        shutil.copyfile(source, tmp)
    os.replace(tmp, target)


def write_review_subject(
    subject: str,
    image: str,
    segmentation: str,
    classes: Sequence[str],
    out_dir: str | os.PathLike[str],
) -> dict[str, str]:
    """Write one subject's review files (see the module's layout) into ``out_dir``.

    The image is rewritten with a fresh header in its own data type; the segmentation is
    checked against the image's grid first. Returns the paths written, by kind.
    """
    out = Path(out_dir)
    data, affine = load_nifti(image, subject, dtype=None)
    labels, label_affine = load_nifti(segmentation, subject, dtype=np.uint8)
    check_same_grid(
        subject, data.shape, affine, labels.shape, label_affine, segmentation, 1e-3, "image"
    )
    paths = {
        "image": out / "slicer" / f"{subject}.nii.gz",
        "segmentation": out / "slicer" / f"{subject}.seg.nrrd",
        "datastore_image": out / "datastore" / f"{subject}.nii.gz",
        "datastore_label": out / "datastore" / "labels" / "original" / f"{subject}.nii.gz",
    }
    save_nifti(paths["image"], data, affine)
    write_seg_nrrd(paths["segmentation"], labels, affine, classes)
    paths["datastore_image"].parent.mkdir(parents=True, exist_ok=True)
    _link_or_copy(paths["image"], paths["datastore_image"])
    save_nifti(paths["datastore_label"], labels, affine, dtype=np.uint8)
    return {k: str(v) for k, v in paths.items()}


def link_final_labels(
    final: str | os.PathLike[str], corrections_dir: str | os.PathLike[str]
) -> Path:
    """Make ``final`` (a MONAI Label datastore's ``labels/final/``, where a submitted correction
    goes) a link to ``corrections_dir`` (made if needed), so that reviewers' work lives where
    neither ``make clean`` nor a rerun reaches it; the link is relative when both are under one
    folder, so that a copied working directory keeps it. Corrections an earlier version left in
    a folder ``final`` are moved into ``corrections_dir`` first; one whose name is taken there by
    another file stays, and so does the folder (a warning names both). Returns ``final``."""
    final, target = Path(final), Path(corrections_dir)
    target.mkdir(parents=True, exist_ok=True)
    if final.is_dir() and not final.is_symlink():
        for old in sorted(final.iterdir()):
            new = target / old.name
            if not new.exists():
                shutil.move(old, new)
                log.info("review: moved %s to %s", old, new)
            elif new.is_file() and old.is_file() and new.read_bytes() == old.read_bytes():
                old.unlink()
            else:
                log.warning("review: %s stays: %s is another file; keep one", old, new)
        if any(final.iterdir()):
            return final
        final.rmdir()
    link = os.path.relpath(target.resolve(), final.parent.resolve())
    if final.is_symlink() and os.readlink(final) == link:
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".{final.name}.link")
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(link, target_is_directory=True)
    os.replace(tmp, final)
    return final


def write_review_package(
    selection: Sequence[Mapping],
    images: Mapping[str, str],
    segmentations: Mapping[str, str],
    classes: Sequence[str],
    out_dir: str | os.PathLike[str],
    corrections_dir: str | os.PathLike[str] | None = None,
) -> list[dict]:
    """Write the review package of the ``selection`` (:func:`select_review_subjects`) into
    ``out_dir``, ``review.tsv`` last. A subject without a segmentation file (failed) is listed
    with an empty ``segmentation``. ``datastore/labels/final/`` holds the reviewers'
    corrections: a link to ``corrections_dir`` (:func:`link_final_labels`), or, without one, a
    folder that is created and never emptied. Returns the table's rows."""
    out = Path(out_dir)
    final = out / "datastore" / "labels" / "final"
    if corrections_dir is not None:
        link_final_labels(final, corrections_dir)
    else:
        final.mkdir(parents=True, exist_ok=True)
    rows = []
    for r in selection:
        s = r["subject"]
        row = {**{k: r.get(k, "") for k in ("subject", "split", "why")}}
        seg = segmentations.get(s)
        if seg and os.path.exists(seg):
            written = write_review_subject(s, images[s], seg, classes, out)
            row.update(image=written["image"], segmentation=written["segmentation"])
        else:
            row.update(image="", segmentation="")
        rows.append(row)
        log.info("review: %s (%s)", s, row["why"])
    write_tsv(out / "review.tsv", rows, list(COLUMNS))
    return rows
