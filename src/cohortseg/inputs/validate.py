"""Validation of every subject's files before any expensive work: headers first, then data.

Each problem is one line naming the subject, the file and what is wrong, e.g.
``sub-0042: label labels/sub-0042.nii.gz: affine differs from image by 2.1 mm``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

from cohortseg.core.cohort import Subject
from cohortseg.core.errors import CohortsegError, InvalidInputError
from cohortseg.core.geometry import canonical_transform, grid_mismatch, spacing_of
from cohortseg.core.io import affine_notes, read_nifti, read_tsv, scaled_voxels, write_tsv
from cohortseg.core.redact import scrub, show_path

log = logging.getLogger(__name__)


COLUMNS = ("subject", "kind", "file", "problem")
# No scanner's field of view comes near 10 m; a header that says more is broken (the header
# fuzzer, benchmarks/fuzz_headers.py, found 3.4e38 mm voxels, which no grid can be resampled
# from).
MAX_FIELD_OF_VIEW_MM = 10_000.0


@dataclass(frozen=True)
class Problem:
    """One thing wrong with one file of one subject."""

    subject: str
    kind: str  # "image", "label" or "sheet"
    file: str
    problem: str

    def __str__(self) -> str:
        return f"{self.subject}: {self.kind} {self.file}: {self.problem}"


def _header(subject: str, path: str) -> tuple[nib.Nifti1Image | None, str | None]:
    """Open a NIfTI file, its header checked as written (:func:`cohortseg.core.io.read_nifti`);
    returns (image, None) or (None, problem)."""
    try:
        return read_nifti(path, subject), None
    except InvalidInputError as exc:
        return None, exc.problem


def _check_geometry(img: nib.Nifti1Image, max_dim: int) -> list[str]:
    problems = []
    shape = img.shape
    if len(shape) == 4 and shape[3] == 1:
        shape = shape[:3]
    if len(shape) != 3:
        problems.append(f"expected a 3D volume, got {len(img.shape)}D shape {tuple(img.shape)}")
        return problems
    if max(shape) > max_dim:
        problems.append(
            f"dimension {max(shape)} exceeds validation.max_dim = {max_dim} (shape {tuple(shape)})"
        )
    affine = np.asarray(img.affine, float)
    if not np.all(np.isfinite(affine)):
        problems.append("affine has non-finite values")
    elif abs(np.linalg.det(affine[:3, :3])) < 1e-6:
        problems.append("affine is singular (zero voxel volume)")
    else:
        problems += _extent_problems(affine, shape)
    return problems


def _extent_problems(affine: np.ndarray, shape: tuple[int, ...]) -> list[str]:
    """A field of view no scanner has, or voxel axes without a direction of their own (what
    reorientation to RAS needs, :func:`cohortseg.core.geometry.canonical_transform`)."""
    extent_mm = spacing_of(affine) * np.asarray(shape)
    if extent_mm.max() > MAX_FIELD_OF_VIEW_MM:
        sizes = ", ".join(f"{size:.3g}" for size in spacing_of(affine))
        axis = int(extent_mm.argmax()) + 1
        return [
            f"the affine spans {extent_mm.max():.3g} mm along voxel axis {axis} (voxel sizes "
            f"{sizes} mm): more than {MAX_FIELD_OF_VIEW_MM:g} mm, beyond any scanner; the "
            "header's sform or qform is broken"
        ]
    ornt = canonical_transform(affine)
    if np.isnan(ornt).any():
        return ["the affine gives some voxel axes no direction of their own (degenerate axes)"]
    return []


def _read_data(img: nib.Nifti1Image) -> tuple[np.ndarray | None, str | None]:
    """All voxel data as cohortseg reads them (native byte order, intensity scaling applied);
    a gzip stream was read to its end, its CRC checked, when the file was opened."""
    try:
        data = scaled_voxels(img)
    except Exception as exc:  # nibabel and numpy raise many types for broken files
        return None, f"cannot read voxel data (truncated or corrupt: {exc})"
    if data.ndim == 4:
        data = data[..., 0]
    return data, None


def _intensity_problems(data: np.ndarray) -> list[str]:
    """Non-finite voxels, and values beyond float32 (in which cohortseg computes)."""
    if not np.issubdtype(data.dtype, np.floating):
        return []  # every integer type up to uint64 lies within float32's range
    if not np.all(np.isfinite(data)):
        return [f"{int(np.count_nonzero(~np.isfinite(data)))} NaN or infinite voxel(s)"]
    largest, limit = float(np.max(np.abs(data))), float(np.finfo(np.float32).max)
    if largest > limit:
        return [
            f"intensities up to {largest:.3g} exceed float32's range ({limit:.3g}), in which "
            "cohortseg computes; rescale the image (or its scl_slope)"
        ]
    return []


def _log_notes(subject: str, kind: str, path: str, tolerance_mm: float) -> None:
    """Log how the affine was chosen where the header leaves room for doubt."""
    for note in affine_notes(path, tolerance_mm):
        log.warning("%s: %s %s: %s", subject, kind, show_path(path, kind), note)


def validate_subject(
    subject: Subject, n_classes: int, max_dim: int, affine_tolerance_mm: float
) -> list[Problem]:
    """Every problem with one subject's image and label (empty list: valid).

    Checks headers first (existence, the header as written: :func:`cohortseg.core.io.read_nifti`
    refuses RGB and complex data, zero or negative voxel sizes, truncated data and the like; 3D,
    dimension limits, affine), then voxel data (decodes completely, finite values within
    float32's range), then the label (integer values within the classes, shape and affine
    matching the image within ``affine_tolerance_mm``). Where the header leaves the affine in
    doubt (:func:`cohortseg.core.io.affine_notes`: sform and qform disagreeing by more than
    ``affine_tolerance_mm``, neither set), a warning names the subject and the file.
    """
    problems: list[Problem] = []

    def add(kind: str, path: str, text: str) -> None:
        text = scrub(text, path, kind)  # messages of libraries may quote the path too
        problems.append(Problem(subject.subject, kind, show_path(path, kind), text))

    img, err = _header(subject.subject, subject.image)
    if err:
        add("image", subject.image, err)
    else:
        _log_notes(subject.subject, "image", subject.image, affine_tolerance_mm)
        geo = _check_geometry(img, max_dim)
        for text in geo:
            add("image", subject.image, text)
        if not geo:
            data, err = _read_data(img)
            for text in [err] if err else _intensity_problems(data):
                add("image", subject.image, text)
            del data
    if subject.label is None:
        return problems
    lab, err = _header(subject.subject, subject.label)
    if err:
        add("label", subject.label, err)
        return problems
    _log_notes(subject.subject, "label", subject.label, affine_tolerance_mm)
    geo = _check_geometry(lab, max_dim)
    for text in geo:
        add("label", subject.label, text)
    if geo:
        return problems
    data, err = _read_data(lab)
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
