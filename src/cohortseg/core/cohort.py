"""The cohort: subjects from a sample sheet or the synthetic demo cohort, and their shards."""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from cohortseg.core.errors import CohortsegError
from cohortseg.core.io import read_tsv

SPLITS = ("train", "val", "test", "infer")


SHEET_COLUMNS = ("subject", "image", "label", "split")


#: Optional sheet column: which DICOM series of the image folder to read (a SeriesInstanceUID,
#: or a regular expression searched in SeriesDescription).
SERIES_COLUMN = "series"


#: Optional sheet column: the hospital (site) holding a subject's data, for federated training.
SITE_COLUMN = "site"


#: Optional sheet column: pixel spacing of a PNG or TIFF image, mm (``0.5`` or ``0.5,0.8``).
SPACING_COLUMN = "spacing_mm"


NIFTI_SUFFIXES = (".nii", ".nii.gz")


@dataclass(frozen=True)
class Subject:
    """One subject of the cohort.

    Attributes
    ----------
    subject
        Unique id, used in every file name.
    image
        Path of the image: a NIfTI file, or a DICOM series (a folder, or one multi-frame
        file; see :func:`is_dicom`).
    label
        Path of the label map (NIfTI, or a DICOM SEG file), or ``None`` when unlabelled.
    split
        One of ``train``, ``val``, ``test``, ``infer``.
    series
        Which series of a DICOM image folder to read (the sheet's ``series`` column), or
        ``None``: the config's ``dicom.series``, else the folder's only series.
    site
        The site holding the subject's data (the sheet's ``site`` column; federated
        training), or ``None``.
    spacing_mm
        Pixel spacing (columns, rows) of a PNG or TIFF image, mm (the sheet's ``spacing_mm``
        column; :mod:`cohortseg.inputs.pictures`), or ``None``.
    """

    subject: str
    image: str
    label: str | None
    split: str
    series: str | None = None
    site: str | None = None
    spacing_mm: tuple[float, float] | None = None


def is_dicom(path: str | None) -> bool:
    """Whether an image or label path names DICOM (a folder or a ``.dcm`` file): anything
    that is not ``.nii``/``.nii.gz``. Decided by name alone, so that planning a cohort opens no
    file. PNG and TIFF pictures count too: the ``convert`` stage that converts DICOM converts
    them (:mod:`cohortseg.inputs.pictures`)."""
    return bool(path) and not str(path).endswith(NIFTI_SUFFIXES)


def read_sample_sheet(path: str | os.PathLike[str]) -> list[Subject]:
    """Read a TSV sample sheet (columns ``subject``, ``image``, ``label``, ``split``; optional
    ``series``, ``site``, ``spacing_mm``): one row of ``workflow/schemas/samples.schema.yaml``
    per subject.

    Relative paths are resolved against the sheet's directory. Raises ``CohortsegError`` naming
    the row and column of any problem. Every row is checked here (about 6 µs a row on a
    2-core machine: 3 s for 500,000 subjects).
    """
    sheet = Path(path)
    if not sheet.exists():
        raise CohortsegError(f"sample sheet {sheet} does not exist (config key 'samples')")
    rows = read_tsv(sheet)
    if rows:
        missing = [c for c in SHEET_COLUMNS if c not in rows[0]]
        if missing:
            raise CohortsegError(f"sample sheet {sheet}: missing column(s) {', '.join(missing)}")
    base = str(sheet.parent)
    subjects = [_sheet_subject(sheet, line, row, base) for line, row in enumerate(rows, start=2)]
    check_unique(subjects, str(sheet))
    return subjects


_SITE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


def _sheet_subject(sheet: Path, line: int, row: Mapping[str, str | None], base: str) -> Subject:
    """One sheet row as a subject; ``CohortsegError`` naming the line (and subject) if bad."""
    sid = (row["subject"] or "").strip()
    split = (row["split"] or "").strip()
    if not sid:
        raise CohortsegError(f"sample sheet {sheet}, line {line}: empty subject id")
    if "/" in sid or sid.startswith("."):
        raise CohortsegError(f"sample sheet {sheet}, line {line}: bad subject id {sid!r}")
    if split not in SPLITS:
        raise CohortsegError(
            f"sample sheet {sheet}, line {line} ({sid}): split {split!r} is not one of {SPLITS}"
        )
    image = (row["image"] or "").strip()
    if not image:
        raise CohortsegError(f"sample sheet {sheet}, line {line} ({sid}): empty image")
    label = (row["label"] or "").strip() or None
    series = (row.get(SERIES_COLUMN) or "").strip() or None
    site = (row.get(SITE_COLUMN) or "").strip() or None
    if site is not None and not _SITE.fullmatch(site):
        raise CohortsegError(f"sample sheet {sheet}, line {line} ({sid}): bad site {site!r}")
    try:
        spacing = parse_spacing(row.get(SPACING_COLUMN))
    except ValueError as exc:
        raise CohortsegError(
            f"sample sheet {sheet}, line {line} ({sid}): spacing_mm: {exc} (mm per pixel: "
            "one number, or columns,rows)"
        ) from exc
    if split in ("train", "val") and label is None:
        raise CohortsegError(f"sample sheet {sheet}, line {line} ({sid}): {split} needs a label")
    return Subject(
        subject=sid,
        image=_resolve(base, image),
        label=_resolve(base, label) if label else None,
        split=split,
        series=series,
        site=site,
        spacing_mm=spacing,
    )


def _resolve(base: str, path: str) -> str:
    """``path`` against the sheet's folder ``base``, normalised (``os.path.normpath``, which
    costs a few µs a path, only where there is something to normalise)."""
    full = path if path.startswith("/") else f"{base.rstrip('/')}/{path}"
    if "/." in full or "//" in full or full.endswith("/") or full.startswith("."):
        return os.path.normpath(full)
    return full


def sheet_row(subject: Subject) -> dict[str, str]:
    """A subject as the sample-sheet row it was read from (paths resolved; optional columns
    only where the subject has a value)."""
    row = {
        "subject": subject.subject,
        "image": subject.image,
        "label": subject.label or "",
        "split": subject.split,
    }
    if subject.series:
        row[SERIES_COLUMN] = subject.series
    if subject.site:
        row[SITE_COLUMN] = subject.site
    if subject.spacing_mm:
        row[SPACING_COLUMN] = ",".join(f"{v:g}" for v in subject.spacing_mm)
    return row


def sheet_row_kinds(subjects: Sequence[Subject]) -> list[dict[str, str]]:
    """One row (:func:`sheet_row`) of each kind of subject: split, labelled or not, site, with or
    without ``series`` and ``spacing_mm``; what the workflow checks against the sample-sheet
    schema at start. :func:`read_sample_sheet` has checked every row already (with the line
    and subject of a problem); checking every row with ``jsonschema`` too would cost about
    28 µs a row, 14 s for 500,000 subjects on a 2-core machine."""
    kinds: dict[tuple, Subject] = {}
    for s in subjects:
        key = (s.split, s.label is None, s.site, s.series is None, s.spacing_mm is None)
        kinds.setdefault(key, s)
    return [sheet_row(s) for s in kinds.values()]


def check_unique(subjects: Sequence[Subject], source: str) -> None:
    """Raise ``CohortsegError`` for duplicate subject ids or two subjects sharing an image."""
    seen: dict[str, str] = {}
    images: dict[str, str] = {}
    problems = []
    for s in subjects:
        if s.subject in seen:
            problems.append(f"{s.subject}: duplicate subject id in {source}")
        seen[s.subject] = s.image
        if s.image in images:
            problems.append(f"{s.subject}: image {s.image} is also the image of {images[s.image]}")
        images.setdefault(s.image, s.subject)
    if problems:
        raise CohortsegError("\n".join(problems))


def demo_subjects(demo: Mapping, root: str = "resources/demo") -> list[Subject]:
    """The demo cohort's subjects, as a pure function of the ``demo`` config section.

    Subject ids are ``demo-001``… in split order train, val, test, infer; ``infer`` subjects
    have no label. With ``demo.format: dicom`` each image is a folder holding a DICOM series
    (labels stay NIfTI, on the grid the series converts to).
    """
    subjects = []
    index = 0
    for split in SPLITS:
        for _ in range(int(demo["subjects_per_split"].get(split, 0))):
            index += 1
            sid = f"demo-{index:03d}"
            label = f"{root}/labels/{sid}.nii.gz" if split != "infer" else None
            image = (
                f"{root}/dicom/{sid}"
                if demo["format"] == "dicom"
                else f"{root}/images/{sid}.nii.gz"
            )
            subjects.append(Subject(sid, image, label, split))
    return subjects


def demo_multi_frame_subject(demo: Mapping) -> str:
    """The demo subject written as one multi-frame (enhanced) DICOM object under
    ``demo.format: dicom`` (the first test subject; the others: one file per slice)."""
    counts = demo["subjects_per_split"]
    return f"demo-{int(counts.get('train', 0)) + int(counts.get('val', 0)) + 1:03d}"


def load_cohort(config: Mapping) -> list[Subject]:
    """All subjects named by the config's ``samples`` key (``demo`` or a sample sheet path)."""
    if config["samples"] == "demo":
        return demo_subjects(config["demo"])
    return read_sample_sheet(config["samples"])


def shards(subjects: Sequence[str], shard_size: int) -> list[list[str]]:
    """Split subject ids, in cohort order, into ceil(N / shard_size) shards.

    Appending subjects to a sheet changes only the last shard(s), never earlier ones.
    """
    if shard_size < 1:
        raise CohortsegError(f"shard_size must be >= 1, got {shard_size}")
    n = math.ceil(len(subjects) / shard_size)
    return [list(subjects[i * shard_size : (i + 1) * shard_size]) for i in range(n)]


def shard_table(
    subjects: Sequence[str], shard_size: int, leave_out: frozenset[str] | set[str] = frozenset()
) -> dict[str, list[str]]:
    """Shards by id (``00000``…, zero-padded to at least 5 digits) → member subjects.

    Membership is fixed by the sheet order of *all* subjects, then subjects in ``leave_out``
    are dropped (and shards left empty with them), so that leaving a subject out never moves
    other subjects between shards.
    """
    groups = shards(subjects, shard_size)
    width = max(5, len(str(len(groups))))
    table = {f"{k:0{width}d}": [s for s in g if s not in leave_out] for k, g in enumerate(groups)}
    return {k: members for k, members in table.items() if members}


def parse_spacing(cell: str | None) -> tuple[float, float] | None:
    """The sample sheet's ``spacing_mm`` cell: ``0.5`` (square pixels) or ``0.5,0.8``
    (columns, rows), mm; ``None`` when empty.

    Raises
    ------
    ValueError
        If the cell is not one or two numbers.
    """
    text = (cell or "").strip()
    if not text:
        return None
    values = tuple(float(v) for v in text.replace(" ", "").split(","))
    if len(values) == 1:
        return (values[0], values[0])
    if len(values) != 2:
        raise ValueError(f"{text!r} is not one or two numbers")
    return values  # type: ignore[return-value]


#: The site of subjects whose sample sheet names none (a cohort without a `site` column).
DEFAULT_SITE = "local"


def auto_shard_size(n_subjects: int) -> int:
    """Subjects per shard for ``shard_size: auto``: the power of two at or above √N.

    About √N shards of about √N subjects: 4 shards for the 16-subject demo, 196 of 256 for
    50,000 subjects. A power of two, so that a growing cohort changes shard membership (and
    reruns its shard jobs) only when it passes 4^k subjects, not with every new subject.
    """
    return _pow2_at_least(math.isqrt(max(n_subjects, 1) - 1) + 1)


def _pow2_at_least(n: int) -> int:
    return 1 << max(0, (n - 1).bit_length())


def resolve_shard_size(setting: int | str, n_subjects: int) -> int:
    """``shard_size`` from the config (a number, or ``auto``: :func:`auto_shard_size`)."""
    if setting == "auto":
        return auto_shard_size(n_subjects)
    size = int(setting)
    if size < 1:
        raise CohortsegError(f"shard_size must be auto or >= 1, got {setting}")
    return size


def subject_site(subject: Subject) -> str:
    """The site holding a subject's data (the sheet's ``site`` column, else ``local``)."""
    return subject.site or DEFAULT_SITE


def read_subjects(manifest: str | os.PathLike[str]) -> list[Subject]:
    """The subjects (``subject``, ``image``, ``label``, ``split``) a manifest lists."""
    return [
        Subject(r["subject"], r["image"], r.get("label") or None, r["split"])
        for r in read_tsv(manifest)
    ]
