"""DICOM series in: find the image series in a folder, select one, check its geometry slice by
slice with messages a person can act on, and convert it to a volume with its RAS affine.

Pixel decoding and the volume's affine come from highdicom (``get_volume_from_series`` for one
file per slice, ``Image.get_volume`` for multi-frame enhanced objects); this module adds what
highdicom leaves to its caller: grouping files into series, selection, and refusing a series
whose slices do not make one regular volume (gaps, tilt, mixed sizes or orientations) with the
reason in words. Output voxel axes are (column, row, slice) with slices in increasing position
along the slice normal (row direction × column direction), so that the affine's third column
points along the normal: the same grid for the same series, whatever order its files are in.
"""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

from cohortseg.core.errors import CohortsegError
from cohortseg.core.redact import redacting

#: Header tags read while grouping files into series (no pixel data).
SCAN_TAGS = (
    "SOPClassUID",
    "SeriesInstanceUID",
    "SeriesNumber",
    "SeriesDescription",
    "Modality",
    "Rows",
    "Columns",
    "NumberOfFrames",
    "EchoNumbers",
    "BurnedInAnnotation",
)


LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


#: What looks like a UID in a message (four or more numeric components).
UID_PATTERN = re.compile(r"(?<![0-9.])[0-9]+(?:\.[0-9]+){3,}(?![0-9.])")


class DicomSeriesError(CohortsegError):
    """A DICOM folder or series that cannot become one regular volume (the text says why).
    In pseudonymised runs UIDs in the text (a library's message may quote them) are shown as
    ``<UID>`` (source UIDs lead back to the PACS), the standard's own (transfer syntaxes…)
    excepted."""

    def __init__(self, text: str) -> None:
        super().__init__(UID_PATTERN.sub(_shown_uid, text) if redacting() else text)


def _shown_uid(match: re.Match) -> str:
    uid = match.group(0)
    return uid if uid.startswith("1.2.840.10008.") else "<UID>"  # the standard's own UIDs stay


@dataclass(frozen=True)
class Series:
    """One image series found in a folder.

    Attributes
    ----------
    uid
        SeriesInstanceUID.
    number
        SeriesNumber, or ``None``.
    description
        SeriesDescription (empty when absent).
    modality
        Modality (``MR``, ``CT``…).
    files
        Its image files, sorted by path (not by position: see :func:`slice_order`).
    echoes
        Each file's EchoNumbers (``""`` where absent).
    burned_in
        Whether any file's BurnedInAnnotation is ``YES``.
    """

    uid: str
    number: int | None
    description: str
    modality: str
    files: tuple[str, ...]
    echoes: tuple[str, ...] = ()
    burned_in: bool = False

    def __str__(self) -> str:
        number = "?" if self.number is None else self.number
        files = f"{len(self.files)} file(s)"
        if redacting():
            # pseudonymised runs keep descriptions (PS3.15's Basic Profile removes Series
            # Description) and source UIDs (they lead back to the PACS) out of logs and tables
            return f"series {number} ({self.modality}, {files})"
        uid = f", SeriesInstanceUID {self.uid}"
        return f"series {number} {self.description!r} ({self.modality}, {files}{uid})"


def _files(path: Path) -> list[Path]:
    """``path`` itself, or the files under it, hidden ones (``.name``) left out."""
    if path.is_file():
        return [path]
    files = (p for p in path.rglob("*") if p.is_file())
    return sorted(
        p for p in files if not any(part.startswith(".") for part in p.relative_to(path).parts)
    )


def find_series(path: str | os.PathLike[str]) -> tuple[list[Series], list[str]]:
    """The image series under ``path`` (a folder, searched recursively, or one file).

    Returns
    -------
    series
        Image series in order of SeriesNumber, then UID.
    skipped
        One note per file that is not a DICOM image: not DICOM at all, or a non-image object
        (a structured report, a presentation state, a DICOMDIR…).
    """
    root = Path(path)
    if not root.exists():
        raise DicomSeriesError("does not exist")
    by_uid: dict[str, list[tuple[str, Dataset]]] = {}
    skipped = []
    for file in _files(root):
        name = file.relative_to(root) if file != root else Path(file.name)
        try:
            ds = pydicom.dcmread(file, stop_before_pixels=True, specific_tags=list(SCAN_TAGS))
        except (InvalidDicomError, OSError, ValueError, EOFError) as exc:
            skipped.append(f"{name}: not a DICOM file ({type(exc).__name__})")
            continue
        if "Rows" not in ds or "Columns" not in ds or "SeriesInstanceUID" not in ds:
            kind = getattr(ds.get("SOPClassUID"), "name", "") or "no image attributes"
            skipped.append(f"{name}: not an image object ({kind})")
            continue
        by_uid.setdefault(str(ds.SeriesInstanceUID), []).append((str(file), ds))
    series = []
    for uid, members in by_uid.items():
        first = members[0][1]
        number = first.get("SeriesNumber")
        series.append(
            Series(
                uid=uid,
                number=int(number) if number not in (None, "") else None,
                description=str(first.get("SeriesDescription", "")),
                modality=str(first.get("Modality", "")),
                files=tuple(f for f, _ in members),
                echoes=tuple(str(ds.get("EchoNumbers", "")) for _, ds in members),
                burned_in=any(
                    str(ds.get("BurnedInAnnotation", "")).upper() == "YES" for _, ds in members
                ),
            )
        )
    series.sort(key=lambda s: (s.number if s.number is not None else -1, s.uid))
    return series, skipped


def looks_like_uid(selector: str) -> bool:
    """Whether a series selector is a UID (digits and dots) rather than a description pattern."""
    return bool(re.fullmatch(r"[0-9]+(\.[0-9]+)+", selector))


def select_series(series: Sequence[Series], selector: str | None) -> Series:
    """The one series ``selector`` names: a SeriesInstanceUID, or a regular expression searched
    in SeriesDescription (e.g. ``SAG_3D_DESS``); without a selector, the folder's only series.

    Raises ``DicomSeriesError`` listing the series found when none or several match.
    """
    if not series:
        raise DicomSeriesError("no DICOM image series found")
    found = "; ".join(str(s) for s in series)
    if not selector:
        if len(series) == 1:
            return series[0]
        raise DicomSeriesError(
            f"holds {len(series)} image series: {found}. Select one with the sample sheet's"
            " `series` column or the config key dicom.series (a SeriesInstanceUID, or a"
            " regular expression matched in SeriesDescription)"
        )
    if looks_like_uid(selector):
        matches = [s for s in series if s.uid == selector]
    else:
        try:
            pattern = re.compile(selector)
        except re.error as exc:
            raise DicomSeriesError(f"series selector {selector!r} is not a regex: {exc}") from None
        matches = [s for s in series if pattern.search(s.description)]
    if len(matches) == 1:
        return matches[0]
    what = "no series matches" if not matches else f"{len(matches)} series match"
    shown = "<SeriesInstanceUID>" if redacting() and looks_like_uid(selector) else repr(selector)
    raise DicomSeriesError(f"{what} the series selector {shown}; found: {found}")


def select_echo(series: Series, echo: int | str | None) -> Series:
    """The files of one echo of a multi-echo series (by EchoNumbers), or the series itself
    when it has one echo.

    Parameters
    ----------
    echo
        ``dicom.echo``: an EchoNumbers value, ``None`` (the series must have one echo) or
        ``all`` (every echo as a channel of one image: refused until images have channels).
    """
    numbers = sorted({e for e in series.echoes if e}, key=lambda e: (len(e), e))
    if echo == "all":
        raise DicomSeriesError(
            f"dicom.echo: all (each of the {len(numbers) or 1} echo(es) a channel of one image)"
            " is not supported yet: cohortseg's images have one channel until multi-channel"
            " inputs come (see the multi-channel issue); select one echo with dicom.echo: N"
        )
    if echo is None:
        if len(numbers) > 1:
            raise DicomSeriesError(
                f"{len(numbers)} echoes in one series (EchoNumbers {', '.join(numbers)}):"
                " select one with dicom.echo (an EchoNumbers value); all echoes as channels"
                " (dicom.echo: all) are not supported yet"
            )
        return series
    files = tuple(f for f, e in zip(series.files, series.echoes, strict=True) if e == str(echo))
    if not files:
        found = ", ".join(numbers) if numbers else "none recorded"
        raise DicomSeriesError(f"dicom.echo is {echo} but the series has no such echo ({found})")
    return replace(series, files=files, echoes=(str(echo),) * len(files))


def choose_series(
    path: str | os.PathLike[str], selector: str | None, echo: int | str | None = None
) -> tuple[Series, list[str]]:
    """The series (and echo) a subject's DICOM folder stands for: :func:`find_series`,
    :func:`select_series` and :func:`select_echo`. Returns it and the skipped files' notes."""
    series, skipped = find_series(path)
    return select_echo(select_series(series, selector), echo), skipped


@dataclass(frozen=True)
class SliceGeometry:
    """Where each 2D frame of a series lies, from its DICOM tags (LPS, mm).

    Attributes
    ----------
    row_cosine
        (3,) direction of increasing column index (ImageOrientationPatient[:3]).
    column_cosine
        (3,) direction of increasing row index (ImageOrientationPatient[3:]).
    pixel_spacing_mm
        (row spacing, column spacing): PixelSpacing.
    positions
        (N, 3) ImagePositionPatient of each frame, in file (or frame) order.
    shape
        (Rows, Columns).
    """

    row_cosine: np.ndarray
    column_cosine: np.ndarray
    pixel_spacing_mm: tuple[float, float]
    positions: np.ndarray
    shape: tuple[int, int]

    @property
    def normal(self) -> np.ndarray:
        """(3,) unit slice normal, row cosine × column cosine."""
        n = np.cross(self.row_cosine, self.column_cosine)
        return n / np.linalg.norm(n)


def _floats(value: object, n: int, what: str) -> np.ndarray:
    try:
        out = np.asarray([float(v) for v in value], float)  # type: ignore[union-attr]
    except (TypeError, ValueError):
        out = np.array([])
    if out.shape != (n,) or not np.all(np.isfinite(out)):
        raise DicomSeriesError(f"{what} is missing or malformed ({value!r})")
    return out


def _plane(ds: Dataset, what: str) -> tuple[np.ndarray, tuple[float, float]]:
    orientation = _floats(ds.get("ImageOrientationPatient"), 6, f"{what}: ImageOrientationPatient")
    spacing = _floats(ds.get("PixelSpacing"), 2, f"{what}: PixelSpacing")
    return orientation, (float(spacing[0]), float(spacing[1]))


def _same(values: Sequence[np.ndarray], tolerance: float) -> bool:
    return all(np.allclose(v, values[0], atol=tolerance, rtol=0) for v in values)


def single_frame_geometry(datasets: Sequence[Dataset], names: Sequence[str]) -> SliceGeometry:
    """The geometry of a one-file-per-slice series (headers suffice). Raises
    ``DicomSeriesError`` for mixed image sizes, orientations or pixel spacings, naming files."""
    shapes = {(int(ds.Rows), int(ds.Columns)) for ds in datasets}
    if len(shapes) > 1:
        raise DicomSeriesError(f"mixed image sizes within the series: {sorted(shapes)}")
    planes = [_plane(ds, name) for ds, name in zip(datasets, names, strict=True)]
    orientations = [p[0] for p in planes]
    if not _same(orientations, 1e-4):
        odd = next(
            n
            for n, o in zip(names, orientations, strict=True)
            if not _same([o, orientations[0]], 1e-4)
        )
        raise DicomSeriesError(
            f"mixed orientations within the series ({odd} differs from {names[0]}):"
            " a localiser or a reformat mixed in; select one series"
        )
    spacings = [np.asarray(p[1]) for p in planes]
    if not _same(spacings, 1e-4):
        raise DicomSeriesError("mixed pixel spacings within the series")
    positions = np.stack(
        [
            _floats(ds.get("ImagePositionPatient"), 3, f"{n}: ImagePositionPatient")
            for ds, n in zip(datasets, names, strict=True)
        ]
    )
    return SliceGeometry(
        orientations[0][:3], orientations[0][3:], planes[0][1], positions, shapes.pop()
    )


def _functional_group(ds: Dataset, frame: int, sequence: str) -> Dataset | None:
    """``sequence``'s item for one frame: per-frame if present there, else shared."""
    for groups, index in (
        ("PerFrameFunctionalGroupsSequence", frame),
        ("SharedFunctionalGroupsSequence", 0),
    ):
        items = ds.get(groups)
        if items and len(items) > index and sequence in items[index]:
            return items[index][sequence][0]
    return None


def multi_frame_geometry(ds: Dataset) -> SliceGeometry:
    """The geometry of a multi-frame (enhanced) image from its functional groups."""
    frames = int(ds.get("NumberOfFrames", 1))
    orientations, spacings, positions = [], [], []
    for f in range(frames):
        orientation = _functional_group(ds, f, "PlaneOrientationSequence")
        measures = _functional_group(ds, f, "PixelMeasuresSequence")
        position = _functional_group(ds, f, "PlanePositionSequence")
        if orientation is None or measures is None or position is None:
            raise DicomSeriesError(
                f"frame {f + 1}: plane position, orientation or pixel measures missing"
            )
        orientations.append(
            _floats(
                orientation.ImageOrientationPatient, 6, f"frame {f + 1}: ImageOrientationPatient"
            )
        )
        spacings.append(_floats(measures.PixelSpacing, 2, f"frame {f + 1}: PixelSpacing"))
        positions.append(
            _floats(position.ImagePositionPatient, 3, f"frame {f + 1}: ImagePositionPatient")
        )
    if not _same(orientations, 1e-4):
        raise DicomSeriesError("mixed orientations among the frames")
    if not _same(spacings, 1e-4):
        raise DicomSeriesError("mixed pixel spacings among the frames")
    return SliceGeometry(
        orientations[0][:3],
        orientations[0][3:],
        (float(spacings[0][0]), float(spacings[0][1])),
        np.stack(positions),
        (int(ds.Rows), int(ds.Columns)),
    )


def slice_order(geometry: SliceGeometry, tolerance_mm: float) -> tuple[np.ndarray, float]:
    """Sort frames by position along the slice normal and check they make a regular volume.

    Returns
    -------
    order
        (N,) frame indices, by increasing position along the normal.
    spacing_mm
        The distance between neighbouring slices (mean over the series).

    Raises
    ------
    DicomSeriesError
        Several frames at one position (echoes, phases), slices stepping off the normal (gantry
        tilt), missing slices (gaps) or otherwise non-uniform spacing; each with the positions.
    """
    normal = geometry.normal
    along = geometry.positions @ normal
    order = np.argsort(along, kind="stable")
    if len(order) < 2:
        raise DicomSeriesError("a single slice: a 3D volume needs at least two")
    d = along[order]
    steps = np.diff(d)
    if np.any(steps < tolerance_mm):
        k = int(np.argmax(steps < tolerance_mm))
        raise DicomSeriesError(
            f"{int(np.sum(steps < tolerance_mm)) + 1} frames share slice positions (first at"
            f" {d[k]:.3f} mm along the normal): several echoes, phases or acquisitions in one"
            " series; select or split them (dicom.echo selects one echo of a multi-echo series)"
        )
    offsets = geometry.positions[order] - geometry.positions[order[0]]
    in_plane = offsets - np.outer(offsets @ normal, normal)
    drift = float(np.linalg.norm(in_plane, axis=1).max())
    if drift > tolerance_mm:
        tilt = np.degrees(np.arctan2(np.linalg.norm(in_plane[-1]), d[-1] - d[0]))
        raise DicomSeriesError(
            f"gantry tilt or sheared stack: slice positions step off the slice normal by up to"
            f" {drift:.2f} mm ({tilt:.1f} degrees); cohortseg does not resample tilted series"
            " (dcm2niix can: convert it to NIfTI with dcm2niix and give the NIfTI)"
        )
    typical = float(np.median(steps))
    gaps = np.flatnonzero(steps > 1.5 * typical)
    if len(gaps):
        k = int(gaps[0])
        missing = int(round(float(steps[gaps].sum()) / typical)) - len(gaps)
        raise DicomSeriesError(
            f"missing slice(s): {len(gaps)} gap(s) in slice positions, the first between"
            f" {d[k]:.3f} and {d[k + 1]:.3f} mm along the normal where slices are {typical:.3f} mm"
            f" apart (about {missing} slice(s) missing of {len(d) + missing})"
        )
    regular = d[0] + np.arange(len(d)) * (d[-1] - d[0]) / (len(d) - 1)
    worst = float(np.abs(d - regular).max())
    if worst > tolerance_mm:
        raise DicomSeriesError(
            f"non-uniform slice spacing: steps from {steps.min():.3f} to {steps.max():.3f} mm"
            f" (a slice lies {worst:.3f} mm off a regular grid; dicom.position_tolerance_mm is"
            f" {tolerance_mm})"
        )
    return order, float((d[-1] - d[0]) / (len(d) - 1))


def geometry_affine(geometry: SliceGeometry, tolerance_mm: float) -> np.ndarray:
    """The (4, 4) RAS voxel-to-world affine (mm) of a series converted with this module's axis
    order, (column, row, slice) with slices along +normal, computed from the tags alone."""
    order, spacing = slice_order(geometry, tolerance_mm)
    row_spacing, column_spacing = geometry.pixel_spacing_mm
    lps = np.eye(4)
    lps[:3, 0] = geometry.row_cosine * column_spacing
    lps[:3, 1] = geometry.column_cosine * row_spacing
    lps[:3, 2] = geometry.normal * spacing
    lps[:3, 3] = geometry.positions[order[0]]
    return LPS_TO_RAS @ lps


def _decode_problem(ds: Dataset, exc: Exception) -> str:
    """What stopped pixel decoding, in one line, naming a compressed transfer syntax."""
    reason = " ".join(f"{type(exc).__name__}: {exc}".split())
    syntax = ds.file_meta.get("TransferSyntaxUID") if hasattr(ds, "file_meta") else None
    if syntax is not None and syntax.is_compressed:
        return (
            f"pixel data in transfer syntax {syntax.name} ({syntax}) cannot be decoded here"
            f" ({reason}); decompress the series (e.g. gdcmconv --raw or dcmdjpeg) or install"
            " the decoder pydicom names"
        )
    return f"pixel data cannot be decoded ({reason})"


def _check_pixel_length(ds: Dataset, name: str) -> None:
    """Refuse an uncompressed object whose pixel data are shorter than its header says (a
    truncated file), naming it."""
    syntax = ds.file_meta.get("TransferSyntaxUID") if hasattr(ds, "file_meta") else None
    if "PixelData" not in ds:
        raise DicomSeriesError(f"{name}: no pixel data")
    if syntax is None or syntax.is_compressed:
        return
    expected = (
        int(ds.Rows)
        * int(ds.Columns)
        * int(ds.get("SamplesPerPixel", 1))
        * int(ds.get("NumberOfFrames", 1) or 1)
        * int(ds.BitsAllocated)
        // 8
    )
    found = len(ds.PixelData)
    if found < expected:
        raise DicomSeriesError(f"{name}: pixel data truncated ({found} of {expected} bytes)")


def _to_output_axes(volume, normal: np.ndarray):  # highdicom Volume in and out
    """(slice, row, column) → (column, row, slice), slices along +normal."""
    volume = volume.permute_spatial_axes([2, 1, 0])
    if float(volume.affine[:3, 2] @ normal) < 0:
        volume = volume.flip_spatial(2)
    return volume


@dataclass(frozen=True)
class ConvertedSeries:
    """A series as a volume.

    Attributes
    ----------
    data
        float32 (column, row, slice) stored values after the modality transform (rescale).
    affine
        (4, 4) RAS voxel-to-world matrix, mm.
    series
        The series converted.
    multi_frame
        Whether it came from one multi-frame object.
    """

    data: np.ndarray
    affine: np.ndarray
    series: Series
    multi_frame: bool


def read_series(series: Series, tolerance_mm: float) -> ConvertedSeries:
    """Convert one image series: every file read, geometry checked (:func:`slice_order`),
    pixels decoded by highdicom. One multi-frame file, or one file per slice."""
    import highdicom as hd

    datasets, names = [], []
    for k, file in enumerate(series.files, start=1):
        # file names can carry patient names (some exports): not shown in pseudonymised runs
        name = f"file {k} of the series" if redacting() else Path(file).name
        try:
            datasets.append(pydicom.dcmread(file))
        except Exception as exc:  # pydicom raises many types for truncated files
            raise DicomSeriesError(f"{name}: unreadable ({type(exc).__name__})") from None
        names.append(name)
    multi = len(datasets) == 1 and int(datasets[0].get("NumberOfFrames", 1)) > 1
    if not multi and any(int(ds.get("NumberOfFrames", 1)) > 1 for ds in datasets):
        raise DicomSeriesError("several multi-frame objects in one series; select one")
    geometry = (
        multi_frame_geometry(datasets[0]) if multi else single_frame_geometry(datasets, names)
    )
    expected = geometry_affine(geometry, tolerance_mm)
    for ds, name in zip(datasets, names, strict=True):
        _check_pixel_length(ds, name)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # highdicom warns about optional attributes
            if multi:
                volume = hd.Image.from_dataset(datasets[0], copy=False).get_volume(dtype=np.float32)
            else:
                volume = hd.get_volume_from_series(
                    datasets, dtype=np.float32, atol=tolerance_mm, apply_voi_transform=False
                )
    except (NotImplementedError, RuntimeError, ValueError, AttributeError) as exc:
        bad = next(
            (
                ds
                for ds in datasets
                if ds.file_meta.get("TransferSyntaxUID", None)
                and ds.file_meta.TransferSyntaxUID.is_compressed
            ),
            None,
        )
        if bad is not None:
            raise DicomSeriesError(_decode_problem(bad, exc)) from None
        raise DicomSeriesError(f"cannot build a volume ({type(exc).__name__}: {exc})") from None
    volume = _to_output_axes(volume, geometry.normal)
    image = volume.to_nibabel()
    affine = np.asarray(image.affine, float)
    corner = _corner_error_mm(affine, expected, image.shape)
    if corner > 0.01:  # the tags' geometry and highdicom's must agree: never expected
        raise DicomSeriesError(f"volume geometry disagrees with the tags by {corner:.3f} mm")
    return ConvertedSeries(np.asarray(image.dataobj, np.float32), affine, series, multi)


def _corner_error_mm(a: np.ndarray, b: np.ndarray, shape: Sequence[int]) -> float:
    from cohortseg.core.geometry import corner_distance_mm

    return corner_distance_mm(a, b, shape[:3])
