"""Validation of every subject's files before any expensive work: headers first, then data.

Each problem is one line naming the subject, the file and what is wrong, e.g.
``sub-0042: label labels/sub-0042.nii.gz: affine differs from image by 2.1 mm``.
"""

from __future__ import annotations

import gzip
import logging
import os
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

from cohortseg.core.cohort import Subject
from cohortseg.core.errors import CohortsegError
from cohortseg.core.geometry import grid_mismatch
from cohortseg.core.io import read_tsv, write_tsv
from cohortseg.core.redact import scrub, show_path

log = logging.getLogger(__name__)


COLUMNS = ("subject", "kind", "file", "problem")


@dataclass(frozen=True)
class Problem:
    """One thing wrong with one file of one subject."""

    subject: str
    kind: str  # "image", "label" or "sheet"
    file: str
    problem: str

    def __str__(self) -> str:
        return f"{self.subject}: {self.kind} {self.file}: {self.problem}"


def _header(path: str) -> tuple[nib.Nifti1Image | None, str | None]:
    """Load a NIfTI header (no voxel data); returns (image, None) or (None, problem)."""
    if not os.path.exists(path):
        return None, "file does not exist"
    if os.path.getsize(path) == 0:
        return None, "file is empty"
    try:
        img = nib.load(path)
    except Exception as exc:  # nibabel raises many types for broken files
        return None, f"not a readable NIfTI file ({type(exc).__name__}: {exc})"
    if not isinstance(img, nib.Nifti1Image | nib.Nifti2Image):
        return None, f"not a NIfTI file ({type(img).__name__})"
    return img, None


def _check_geometry(img: nib.Nifti1Image, max_dim: int) -> list[str]:
    problems = []
    shape = img.shape
    if len(shape) == 4 and shape[3] == 1:
        shape = shape[:3]
    if len(shape) != 3:
        problems.append(f"expected a 3D volume, got {len(img.shape)}D shape {tuple(img.shape)}")
        return problems
    if min(shape) < 1:
        problems.append(f"zero-length dimension in shape {tuple(shape)}")
    if max(shape) > max_dim:
        problems.append(
            f"dimension {max(shape)} exceeds validation.max_dim = {max_dim} (shape {tuple(shape)})"
        )
    affine = np.asarray(img.affine, float)
    if not np.all(np.isfinite(affine)):
        problems.append("affine has non-finite values")
    elif abs(np.linalg.det(affine[:3, :3])) < 1e-6:
        problems.append("affine is singular (zero voxel volume)")
    return problems


def _read_data(img: nib.Nifti1Image, path: str) -> tuple[np.ndarray | None, str | None]:
    """All voxel data; a gzip stream is read to its end so that its CRC is checked too."""
    try:
        if path.endswith(".gz"):
            with gzip.open(path, "rb") as handle:
                img = type(img).from_bytes(handle.read())
        data = np.asanyarray(img.dataobj)
    except (EOFError, OSError, zlib.error, gzip.BadGzipFile, ValueError) as exc:
        return None, f"cannot read voxel data (truncated or corrupt: {exc})"
    if data.ndim == 4:
        data = data[..., 0]
    return data, None


def validate_subject(
    subject: Subject, n_classes: int, max_dim: int, affine_tolerance_mm: float
) -> list[Problem]:
    """Every problem with one subject's image and label (empty list: valid).

    Checks headers first (existence, NIfTI, 3D, dimension limits, affine), then voxel data
    (decodes completely, finite values), then the label (integer values within the classes,
    shape and affine matching the image within ``affine_tolerance_mm``).
    """
    problems: list[Problem] = []

    def add(kind: str, path: str, text: str) -> None:
        text = scrub(text, path, kind)  # messages of libraries may quote the path too
        problems.append(Problem(subject.subject, kind, show_path(path, kind), text))

    img, err = _header(subject.image)
    if err:
        add("image", subject.image, err)
    else:
        geo = _check_geometry(img, max_dim)
        for text in geo:
            add("image", subject.image, text)
        if not geo:
            data, err = _read_data(img, subject.image)
            if err:
                add("image", subject.image, err)
            elif np.issubdtype(data.dtype, np.floating) and not np.all(np.isfinite(data)):
                n_bad = int(np.count_nonzero(~np.isfinite(data)))
                add("image", subject.image, f"{n_bad} NaN or infinite voxel(s)")
    if subject.label is None:
        return problems
    lab, err = _header(subject.label)
    if err:
        add("label", subject.label, err)
        return problems
    geo = _check_geometry(lab, max_dim)
    for text in geo:
        add("label", subject.label, text)
    if geo:
        return problems
    data, err = _read_data(lab, subject.label)
    if err:
        add("label", subject.label, err)
        return problems
    if np.issubdtype(data.dtype, np.floating):
        if not np.all(np.isfinite(data)):
            add("label", subject.label, "NaN or infinite values in a label map")
            return problems
        if not np.all(data == np.round(data)):
            add("label", subject.label, "non-integer label values")
            return problems
    values = np.unique(data)
    bad = [int(v) for v in values if v < 0 or v >= n_classes]
    if bad:
        add(
            "label",
            subject.label,
            f"label values {bad[:10]} outside the configured classes 0..{n_classes - 1}",
        )
    if img is not None and not _check_geometry(img, max_dim):
        # the same check, and words, as where labels are read
        # (cohortseg.core.geometry.check_same_grid)
        mismatch = grid_mismatch(
            img.shape[:3], img.affine, lab.shape[:3], lab.affine, affine_tolerance_mm
        )
        if mismatch:
            add("label", subject.label, mismatch)
    return problems


def validate_subjects(
    subjects: Sequence[Subject],
    settings: Mapping,
    n_classes: int,
    known: Sequence[Problem] = (),
) -> list[Problem]:
    """Validate several subjects (one shard); logs each problem. Subjects with ``known``
    problems (their DICOM inputs could not be converted) are reported with those, unopened."""
    problems = list(known)
    for p in known:
        log.warning("%s", p)
    for s in subjects:
        if any(p.subject == s.subject for p in known):
            continue
        found = validate_subject(
            s, n_classes, int(settings["max_dim"]), float(settings["affine_tolerance_mm"])
        )
        for p in found:
            log.warning("%s", p)
        problems.extend(found)
    return problems


def write_problems(path: str | os.PathLike[str], problems: Sequence[Problem]) -> None:
    """Write problems as a TSV (subject, kind, file, problem)."""
    write_tsv(path, [p.__dict__ for p in problems], COLUMNS)


def read_problems(path: str | os.PathLike[str]) -> list[Problem]:
    """Read a problems TSV."""
    return [Problem(**row) for row in read_tsv(path)] if Path(path).exists() else []


def gate(problems: Sequence[Problem], on_invalid: str) -> str:
    """Decide whether the workflow may go on after validation; returns a message to log.

    ``fail``: any problem stops the workflow, listing every problem at once. ``skip``: the
    workflow goes on, and every job after validation leaves the invalid subjects out (each
    shard job reads its validation shard's problems when it runs, so the same run finishes
    the rest of the cohort).
    """
    if not problems:
        return "all subjects are valid"
    listing = "\n".join(str(p) for p in problems)
    invalid = sorted({p.subject for p in problems})
    if on_invalid == "fail":
        raise CohortsegError(
            f"{len(invalid)} invalid subject(s) (validation.on_invalid: fail; set it to skip "
            f"to leave them out):\n{listing}"
        )
    return f"{len(invalid)} invalid subject(s) left out:\n{listing}"
