"""Conversion of a shard's DICOM inputs (and 2D PNG or TIFF pictures, as one-slice volumes:
:mod:`cohortseg.inputs.pictures`) to the NIfTI files the rest of the pipeline reads:
one row per subject in the shard's conversion manifest, with the problem that stopped it (a
validation problem of that subject, one line) or the SHA-256 of what was written."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence

import numpy as np

from cohortseg.core.cohort import Subject, is_dicom
from cohortseg.core.errors import InvalidInputError
from cohortseg.core.io import read_tsv, save_nifti, sha256_file, write_tsv
from cohortseg.core.redact import redacting, show_path
from cohortseg.dicom.deidentify import BURNED_IN
from cohortseg.dicom.seg import seg_label_on_grid
from cohortseg.dicom.series import DicomSeriesError, choose_series, read_series
from cohortseg.inputs.pictures import is_picture, read_picture
from cohortseg.inputs.validate import Problem

log = logging.getLogger(__name__)


COLUMNS = ("subject", "image", "image_sha256", "label", "label_sha256", "kind", "file", "problem")


def convert_image(
    source: Subject,
    target: str,
    selector: str | None,
    tolerance_mm: float,
    echo: int | str | None = None,
    refuse_burned_in: bool = False,
) -> tuple[np.ndarray, str]:
    """Convert ``source.image`` (a DICOM series; one echo of it, ``echo``) to the NIfTI
    ``target``; returns the affine ((4, 4) RAS, mm) and a one-line description for the log
    (no SeriesDescription or UID in pseudonymised runs). With ``refuse_burned_in``
    (pseudonymised runs) a series whose BurnedInAnnotation is ``YES`` is refused."""
    chosen, skipped = choose_series(source.image, source.series or selector, echo)
    for note in skipped:
        log.info("%s: skipped %s", source.subject, note if not redacting() else "a file")
    if refuse_burned_in and chosen.burned_in:
        raise DicomSeriesError(BURNED_IN)
    start = time.perf_counter()
    converted = read_series(chosen, tolerance_mm)
    save_nifti(target, converted.data, converted.affine)
    form = " as one multi-frame object" if converted.multi_frame else ""
    shape = "x".join(map(str, converted.data.shape))
    return (
        converted.affine,
        f"{chosen}{form} -> {shape} voxels in {time.perf_counter() - start:.2f} s",
    )


def convert_subject(
    source: Subject,
    target: Subject,
    classes: Sequence[str],
    selector: str | None,
    tolerance_mm: float,
    echo: int | str | None = None,
    refuse_burned_in: bool = False,
) -> dict[str, str]:
    """Convert what is DICOM among ``source``'s image and label (a DICOM SEG), or a PNG or
    TIFF picture, to ``target``'s NIfTI paths (``echo``, ``refuse_burned_in``: see
    :func:`convert_image`). Returns its manifest row; a problem is recorded there (one
    validation problem of the subject: a series that is not one regular volume, a SEG whose
    segments overlap…), not raised."""
    row = {"subject": target.subject}
    kind, path = "image", source.image
    try:
        if is_picture(source.image):
            data, affine = read_picture(target.subject, source.image, source.spacing_mm)
            save_nifti(target.image, data, affine)
            log.info("%s: picture -> %s pixels", target.subject, "x".join(map(str, data.shape)))
            row.update(image=target.image, image_sha256=sha256_file(target.image))
        elif is_dicom(source.image):
            affine, text = convert_image(
                source, target.image, selector, tolerance_mm, echo, refuse_burned_in
            )
            log.info("%s: %s", target.subject, text)
            row.update(image=target.image, image_sha256=sha256_file(target.image))
        if is_picture(source.label):
            kind, path = "label", str(source.label)
            picture_label_on_grid(target, source)
            row.update(label=target.label, label_sha256=sha256_file(target.label))
        elif is_dicom(source.label):
            kind, path = "label", str(source.label)
            import nibabel as nib

            grid = nib.load(target.image)
            labels = seg_label_on_grid(path, classes, grid.affine, grid.shape[:3])
            save_nifti(target.label, labels, grid.affine, dtype=np.uint8)
            log.info("%s: DICOM SEG label -> %s", target.subject, target.label)
            row.update(label=target.label, label_sha256=sha256_file(target.label))
    except (DicomSeriesError, InvalidInputError) as exc:
        text = exc.problem if isinstance(exc, InvalidInputError) else str(exc)
        problem = Problem(target.subject, kind, show_path(path, kind), text)
        log.warning("%s", problem)
        row.update(kind=problem.kind, file=problem.file, problem=problem.problem)
    return row


def picture_label_on_grid(target: Subject, source: Subject) -> None:
    """Write ``source``'s PNG or TIFF label as ``target.label``, on the grid of ``target.image``
    (the converted picture or a single-slice NIfTI).

    Raises
    ------
    InvalidInputError
        If the label cannot be read or its pixels do not match the image's.
    """
    import nibabel as nib

    grid = nib.load(target.image)
    labels, _ = read_picture(target.subject, str(source.label), source.spacing_mm or (1, 1), True)
    if labels.shape != tuple(grid.shape[:3]):
        raise InvalidInputError(
            target.subject,
            str(source.label),
            f"label of {labels.shape[0]}x{labels.shape[1]} pixels (columns x rows) does not "
            f"match its image's grid {'x'.join(map(str, grid.shape[:3]))}",
        )
    save_nifti(target.label, labels, grid.affine, dtype=np.uint8)
    log.info("%s: picture label -> %s", target.subject, target.label)


def write_conversions(path: str | os.PathLike[str], rows: Sequence[dict[str, str]]) -> None:
    """Write a shard's conversion manifest."""
    write_tsv(path, rows, COLUMNS)


def conversion_problems(path: str | os.PathLike[str]) -> list[Problem]:
    """The problems a conversion manifest records (none if it does not exist)."""
    if not os.path.exists(path):
        return []
    return [
        Problem(r["subject"], r["kind"], r["file"], r["problem"])
        for r in read_tsv(path)
        if r["problem"]
    ]
