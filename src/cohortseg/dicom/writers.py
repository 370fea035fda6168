"""Writing a volume as a DICOM MR or CT series, one file per slice or one multi-frame
(enhanced) object: the demo cohort's DICOM inputs (``demo.format: dicom``) and the tests'. The
objects are valid for dciodvfy (dicom3tools): no errors.

Files are named and numbered in a shuffled order (InstanceNumber runs against position), so
that whatever reads them must order slices by ImagePositionPatient along the slice normal.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, MRImageStorage, generate_uid

from cohortseg.core.io import atomic_write
from cohortseg.dicom.series import LPS_TO_RAS

#: Patient and institution attributes a demo series carries, all synthetic: the privacy tests
#: search every byte under results/ and logs/ for them.
DEMO_PHI = {
    "PatientName": "Demo^Patient",
    "PatientID": "MRN-DEMO-4711",
    "PatientBirthDate": "19610203",
    "AccessionNumber": "ACC-DEMO-0815",
    "InstitutionName": "Demo General Hospital",
    "InstitutionAddress": "1 Demo Street, Demotown",
    "ReferringPhysicianName": "Referrer^Demo",
    "PerformingPhysicianName": "Performer^Demo",
    "OperatorsName": "Operator^Demo",
    "StudyDate": "20190412",
    "SeriesDate": "20190412",
    "AcquisitionDate": "20190412",
    "ContentDate": "20190412",
    "StudyID": "STUDY-DEMO-42",
}


def along_normal(
    affine: np.ndarray, *arrays: np.ndarray
) -> tuple[np.ndarray, tuple[np.ndarray, ...]]:
    """The same grid with its third axis flipped if needed so that it points along the DICOM
    slice normal (first axis × second axis in LPS), as :mod:`cohortseg.dicom.series` orders slices.

    Returns the (4, 4) RAS affine and the (X, Y, Z) arrays on that grid.
    """
    lps = LPS_TO_RAS @ affine
    normal = np.cross(lps[:3, 0], lps[:3, 1])
    if float(normal @ lps[:3, 2]) >= 0:
        return affine, arrays
    flip = np.eye(4)
    flip[2, 2] = -1
    flip[2, 3] = arrays[0].shape[2] - 1 if arrays else 0
    return affine @ flip, tuple(np.ascontiguousarray(a[:, :, ::-1]) for a in arrays)


def _storage(data: np.ndarray) -> tuple[np.ndarray, float, float]:
    """int16 stored values, RescaleSlope and RescaleIntercept for ``data``."""
    if np.issubdtype(data.dtype, np.integer) and data.min() >= -32768 and data.max() <= 32767:
        return data.astype(np.int16), 1.0, 0.0
    lo, hi = float(data.min()), float(data.max())
    slope = (hi - lo) / 65000 if hi > lo else 1.0
    stored = np.round((data - lo) / slope - 32500).astype(np.int16)
    return stored, slope, lo + 32500 * slope


def _ds_number(x: float) -> str:
    return f"{x:.10g}"


def _base_dataset(
    study: str,
    series: str,
    frame_of_reference: str,
    description: str,
    phi: Mapping[str, str],
    modality: str = "MR",
) -> Dataset:
    ds = Dataset()
    ds.SOPClassUID = CTImageStorage if modality == "CT" else MRImageStorage
    ds.StudyInstanceUID = study
    ds.SeriesInstanceUID = series
    ds.FrameOfReferenceUID = frame_of_reference
    ds.Modality = modality
    ds.SeriesNumber = 3
    ds.SeriesDescription = description
    ds.Manufacturer = "cohortseg demo"
    ds.StudyTime = ds.SeriesTime = "101500"
    ds.PatientSex = "O"
    ds.PositionReferenceIndicator = ""
    ds.Laterality = ""
    ds.PatientPosition = "HFS"
    ds.AcquisitionNumber = 1
    if modality == "CT":
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.KVP = "120"
    else:
        ds.ImageType = ["ORIGINAL", "PRIMARY", "OTHER"]
        ds.ScanningSequence = "GR"
        ds.SequenceVariant = "NONE"
        ds.ScanOptions = ""
        ds.MRAcquisitionType = "3D"
        ds.RepetitionTime = "15"
        ds.EchoTime = "5"
        ds.EchoTrainLength = "1"
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 1
    ds.WindowCenter, ds.WindowWidth = "0", "2000"
    for key, value in phi.items():
        setattr(ds, key, value)
    return ds


def _dated_like_the_study(image: Dataset, base: Dataset) -> None:
    """The enhanced object's creation dates (highdicom's clock) set to the study's, so that
    the same demo gives the same bytes, and its only dates are the patient's."""
    day = str(base.get("StudyDate", "") or "")
    if not day:
        return
    image.InstanceCreationDate, image.InstanceCreationTime = day, base.StudyTime
    for item in image.get("ContributingEquipmentSequence", []):
        if "ContributionDateTime" in item:
            item.ContributionDateTime = f"{day}{base.StudyTime}"


def _slices(data: np.ndarray, affine: np.ndarray, base: Dataset, seed: int) -> list[Dataset]:
    """One single-frame dataset per slice k of ``data`` (X, Y, Z) under RAS ``affine``."""
    lps = LPS_TO_RAS @ np.asarray(affine, float)
    col_spacing = float(np.linalg.norm(lps[:3, 0]))
    row_spacing = float(np.linalg.norm(lps[:3, 1]))
    slice_spacing = float(np.linalg.norm(lps[:3, 2]))
    normal = np.cross(lps[:3, 0], lps[:3, 1])
    if (
        abs(abs(float(normal @ lps[:3, 2])) / (col_spacing * row_spacing * slice_spacing) - 1)
        > 1e-6
    ):
        raise ValueError("the affine's axes are not orthogonal: no DICOM stack has this grid")
    if float(normal @ lps[:3, 2]) < 0:
        raise ValueError("the third axis runs against the slice normal: use along_normal()")
    stored, slope, intercept = _storage(np.asarray(data))
    orientation = [*(lps[:3, 0] / col_spacing), *(lps[:3, 1] / row_spacing)]
    out = []
    for k in range(data.shape[2]):
        ds = Dataset()
        ds.update(base)
        ds.SOPInstanceUID = _uid(seed, "slice", k)
        ds.ImagePositionPatient = [_ds_number(v) for v in lps[:3, :] @ [0, 0, k, 1]]
        ds.ImageOrientationPatient = [_ds_number(v) for v in orientation]
        ds.PixelSpacing = [_ds_number(row_spacing), _ds_number(col_spacing)]
        ds.SliceThickness = _ds_number(slice_spacing)
        ds.SpacingBetweenSlices = _ds_number(slice_spacing)
        ds.Rows, ds.Columns = int(data.shape[1]), int(data.shape[0])
        ds.RescaleSlope, ds.RescaleIntercept = _ds_number(slope), _ds_number(intercept)
        ds.RescaleType = "HU" if base.Modality == "CT" else "US"
        ds.PixelData = np.ascontiguousarray(stored[:, :, k].T).tobytes()  # rows = j, columns = i
        out.append(ds)
    return out


def _with_file_meta(ds: Dataset) -> Dataset:
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    return ds


def _uid(seed: int, *parts: object) -> str:
    """A UID determined by the seed and ``parts`` (the same demo, the same UIDs)."""
    return generate_uid(entropy_srcs=[str(seed), *map(str, parts)])


def _save(ds: Dataset, path: Path) -> None:
    _with_file_meta(ds)
    with atomic_write(path) as tmp:
        pydicom.dcmwrite(tmp, ds, enforce_file_format=True)


def write_series(
    folder: str | os.PathLike[str],
    data: np.ndarray,
    affine: np.ndarray,
    *,
    description: str = "SAG_3D_DESS",
    phi: Mapping[str, str] = DEMO_PHI,
    multi_frame: bool = False,
    seed: int = 0,
    study_uid: str | None = None,
    modality: str = "MR",
) -> list[Path]:
    """Write ``data`` (X, Y, Z) on the grid ``affine`` ((4, 4) RAS, mm) as an MR series (or,
    with ``modality="CT"``, a CT series whose stored values are Hounsfield units).

    X runs along each row (columns), Y down the rows, Z across slices; the third axis must
    point along the slice normal (:func:`along_normal`). Values are stored as int16 (with
    RescaleSlope/Intercept where they are not int16 already). ``multi_frame`` writes one
    Legacy Converted Enhanced MR (or CT) object (highdicom) instead of one file per slice.
    Returns the files written.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    study = study_uid or _uid(seed, "study")
    base = _base_dataset(
        study, _uid(seed, "series"), _uid(seed, "frame"), description, phi, modality
    )
    slices = _slices(data, affine, base, seed)
    if multi_frame:
        import highdicom as hd

        for k, ds in enumerate(slices, start=1):
            ds.InstanceNumber = k
            _with_file_meta(ds)
        legacy = (
            hd.legacy.LegacyConvertedEnhancedCTImage
            if modality == "CT"
            else hd.legacy.LegacyConvertedEnhancedMRImage
        )
        image = legacy(
            slices,
            series_instance_uid=base.SeriesInstanceUID,
            series_number=int(base.SeriesNumber),
            sop_instance_uid=_uid(seed, "enhanced"),
            instance_number=1,
        )
        # the single-frame objects it was converted from are not written: nothing to refer to
        del image.ReferencedSeriesSequence
        image.Laterality = ""  # Type 2C (a paired body part may be imaged), dropped by highdicom
        _dated_like_the_study(image, base)
        path = folder / "enhanced.dcm"
        with atomic_write(path) as tmp:
            image.save_as(tmp)
        return [path]
    order = rng.permutation(len(slices))
    paths = []
    for number, k in enumerate(order, start=1):
        ds = slices[k]
        ds.InstanceNumber = len(slices) - number + 1  # against position: must not be trusted
        path = folder / f"IM{number:04d}.dcm"
        _save(ds, path)
        paths.append(path)
    return paths
