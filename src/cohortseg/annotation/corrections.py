"""Corrected labels coming back from review: found in ``corrections.dir`` (a folder of the
working directory outside ``results/``, so that neither ``make clean`` nor a rerun removes a
reviewer's work; MONAI Label submits there too, through the review datastore's
``labels/final/``, a link to it), checked like any label, written as NIfTI label maps on their
image's grid, and made labelled subjects of the cohort.

A correction is named after its subject: ``{subject}.seg.nrrd`` (or ``.nrrd``, as 3D Slicer
saves a segmentation) or ``{subject}.nii.gz`` / ``.nii``; in a MONAI Label datastore, only those
in ``labels/final/``. A corrected subject that had a label keeps its split (so val and test stay
fixed); one that had none (``infer``) joins ``train``, or ``val`` for a share of them
(``corrections.split``).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np

from cohortseg.core.cohort import Subject
from cohortseg.core.errors import CohortsegError, InvalidInputError
from cohortseg.core.geometry import check_same_grid, embed_in_grid
from cohortseg.core.io import load_nifti

#: Where the checked corrections are written (one NIfTI label map per subject).
CORRECTED_LABELS = "results/corrections"


SUFFIXES = (".seg.nrrd", ".nrrd", ".nii.gz", ".nii")


def corrected_label_path(subject: str) -> str:
    """The checked correction of ``subject``: a NIfTI label map on its image's grid."""
    return f"{CORRECTED_LABELS}/{subject}.nii.gz"


def _subject_of(name: str) -> str | None:
    for suffix in SUFFIXES:
        if name.lower().endswith(suffix) and not name.startswith("."):
            return name[: -len(suffix)]
    return None


def find_corrections(*directories: str | os.PathLike[str] | None) -> dict[str, str]:
    """Subject id → correction file in each of ``directories``: in ``labels/final/`` for a
    MONAI Label datastore (a directory that has one: its top level holds the images), else in
    the directory itself; ``None`` or absent directories hold none, and a folder reached twice
    (the review datastore's ``labels/final/`` is a link to ``corrections.dir``) is read once.

    Raises
    ------
    CohortsegError
        If a subject has two corrections (the message names both files).
    """
    found: dict[str, str] = {}
    seen: set[str] = set()
    for directory in directories:
        if directory is None:
            continue
        folder = Path(directory)
        if (folder / "labels" / "final").is_dir():
            folder = folder / "labels" / "final"
        if os.path.realpath(folder) in seen:  # a datastore's labels/final linked to the other
            continue
        seen.add(os.path.realpath(folder))
        if folder.is_dir():
            for path in sorted(folder.iterdir()):
                subject = _subject_of(path.name) if path.is_file() else None
                if subject is None:
                    continue
                if subject in found:
                    raise CohortsegError(
                        f"corrections: {subject} has two corrections, {found[subject]} and "
                        f"{path}; keep one"
                    )
                found[subject] = str(path)
    return found


def correction_split(subject: str, split: str, setting: str | float) -> str:
    """The split of a corrected subject: its own if it had a label; else ``train``, or ``val``
    for a deterministic share ``setting`` (a number in (0, 1), drawn by a hash of the id)."""
    if split != "infer":
        return split
    if setting == "train":
        return "train"
    draw = int(hashlib.sha256(subject.encode()).hexdigest()[:8], 16) / 16**8
    return "val" if draw < float(setting) else "train"


def apply_corrections(
    subjects: Sequence[Subject], corrections: Mapping[str, str], split: str | float
) -> list[Subject]:
    """The cohort with each corrected subject's label replaced by its checked correction
    (:func:`corrected_label_path`) and its split set by :func:`correction_split`.

    Raises
    ------
    CohortsegError
        If a correction names no subject of the cohort.
    """
    ids = {s.subject for s in subjects}
    unknown = sorted(set(corrections) - ids)
    if unknown:
        raise CohortsegError(
            f"corrections: {', '.join(corrections[s] for s in unknown)}: no subject of this "
            "cohort has that id (name a correction after its subject)"
        )
    return [
        replace(
            s,
            label=corrected_label_path(s.subject),
            split=correction_split(s.subject, s.split, split),
        )
        if s.subject in corrections
        else s
        for s in subjects
    ]


def read_correction(
    subject: str,
    path: str,
    image: str,
    classes: Sequence[str],
    tolerance_mm: float = 1.0,
) -> tuple[np.ndarray, np.ndarray]:
    """A corrected label, checked like any label against its image.

    Slicer segments are mapped to classes by name
    (:func:`cohortseg.annotation.slicer.read_seg_nrrd`); NIfTI values must be integers in
    ``0..len(classes)``; the grid must be the image's (shape, and the affine within
    ``tolerance_mm``).

    Returns
    -------
    labels
        (X, Y, Z) uint8 label map on the image's grid.
    affine
        The image's (4, 4) RAS affine (mm).

    Raises
    ------
    InvalidInputError
        Naming the subject and the file: unreadable, an unknown segment or value, another grid.
    """
    # here, not at the top: the workflow imports this module when it plans, and the Slicer
    # reader brings matplotlib (segment colours) with it
    from cohortseg.annotation.slicer import is_seg_nrrd, read_seg_nrrd

    image_header = load_nifti(image, subject, dtype=None)
    shape, affine = image_header[0].shape, image_header[1]
    if is_seg_nrrd(path):
        labels, label_affine = read_seg_nrrd(path, classes, subject)
        if labels.shape != tuple(shape):  # Slicer saves a segmentation cropped to its extent
            placed = embed_in_grid(labels, label_affine, shape, affine, tolerance_mm)
            if isinstance(placed, str):
                raise InvalidInputError(subject, path, f"cropped segmentation: {placed}")
            labels, label_affine = placed, affine
    else:
        values, label_affine = load_nifti(path, subject, dtype=None)
        if not np.all(np.isfinite(values)) or not np.all(values == np.round(values)):
            raise InvalidInputError(subject, path, "label values are not integers")
        bad = np.setdiff1d(np.unique(values), np.arange(len(classes) + 1))
        if bad.size:
            raise InvalidInputError(
                subject,
                path,
                f"label values {bad.tolist()} outside 0..{len(classes)} (classes: "
                f"{', '.join(classes)})",
            )
        labels = values.astype(np.uint8)
    check_same_grid(subject, shape, affine, labels.shape, label_affine, path, tolerance_mm)
    return labels, affine
