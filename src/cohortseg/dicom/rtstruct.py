"""RT Structure Sets out: a segmentation as one ROI per class, closed planar contours on each
slice in patient coordinates (LPS, mm), referencing the images of its source CT or MR series,
for the treatment-planning systems that import RTSTRUCT and not SEG.

Contours are drawn by marching squares at level 0.5 on each slice's mask (scikit-image's
``find_contours``), i.e. half-way between the centres of voxels inside and outside: a voxel's
centre lies inside a contour exactly when the voxel is in the class, so that filling the
polygons (even-odd rule: a hole is a contour of its own inside another, as planning systems
read them) gives back the segmentation. Voxel coordinates become patient coordinates through
the segmentation's affine, which is the converted series' (any orientation, oblique included);
each slice is matched to its image (or frame) by position, so every contour references the
image it lies on. Patient, study, UIDs and dates follow :class:`~cohortseg.dicom.identity.Identity`
as for a SEG.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from cohortseg import __version__
from cohortseg.core.io import atomic_write
from cohortseg.dicom.identity import Identity
from cohortseg.dicom.series import LPS_TO_RAS, DicomSeriesError, Series

RT_STRUCTURE_SET_STORAGE = "1.2.840.10008.5.1.4.1.1.481.3"
#: What RTReferencedStudySequence's ReferencedSOPClassUID names (Study Component Management,
#: retired, as PS3.3 C.8.8.5 still asks).
STUDY_SOP_CLASS = "1.2.840.10008.3.1.2.3.1"

#: Patient and study attributes an RTSTRUCT copies from its source's header (as
#: :meth:`Identity.header` gives it, the Type 2 ones present).
PATIENT_STUDY_KEYWORDS = (
    "PatientName",
    "PatientID",
    "IssuerOfPatientID",
    "PatientBirthDate",
    "PatientSex",
    "PatientAge",
    "PatientSize",
    "PatientWeight",
    "EthnicGroup",
    "StudyInstanceUID",
    "StudyDate",
    "StudyTime",
    "ReferringPhysicianName",
    "StudyID",
    "AccessionNumber",
    "StudyDescription",
)


def slice_contours(mask: np.ndarray) -> list[np.ndarray]:
    """The closed contours of a 2D mask (X, Y) in voxel coordinates: (K, 2) arrays of (i, j),
    the last point not repeating the first; outer boundaries and holes alike."""
    from skimage.measure import approximate_polygon, find_contours

    padded = np.pad(np.asarray(mask, np.float32), 1)
    out = []
    for contour in find_contours(padded, 0.5):
        # drop points on straight runs only (tolerance 0: the polygon is unchanged)
        points = approximate_polygon(contour, tolerance=0)[:-1] - 1.0
        if len(points) >= 3:
            out.append(points)
    return out


def _frames(headers: Sequence[Dataset]) -> list[tuple[Dataset, int | None, np.ndarray]]:
    """(header, frame number or None, ImagePositionPatient (LPS, mm)) of every 2D image."""
    from cohortseg.dicom.series import multi_frame_geometry

    if len(headers) == 1 and int(headers[0].get("NumberOfFrames", 1) or 1) > 1:
        positions = multi_frame_geometry(headers[0]).positions
        return [(headers[0], k + 1, p) for k, p in enumerate(positions)]
    return [(h, None, np.asarray(h.ImagePositionPatient, float)) for h in headers]


def _image_reference(header: Dataset, frame: int | None) -> Dataset:
    item = Dataset()
    item.ReferencedSOPClassUID = header.SOPClassUID
    item.ReferencedSOPInstanceUID = header.SOPInstanceUID
    if frame is not None:
        item.ReferencedFrameNumber = frame
    return item


def _ds(values: np.ndarray) -> list[str]:
    """Decimal strings (at most 16 characters) to 1e-4 mm."""
    return [f"{v:.4f}" for v in np.asarray(values, float).ravel()]


def _code(text: str) -> Dataset:
    scheme, value, meaning = (text.split(":", 2) + ["", ""])[:3]
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, scheme, meaning
    return item


def rtstruct_dataset(
    labels: np.ndarray,
    affine: np.ndarray,
    series: Series,
    identity: Identity,
    classes: Sequence[str],
    *,
    colours: Sequence[tuple[float, float, float]],
    properties: Mapping[str, Mapping[str, str]] | None = None,
    model_id: str = "",
    tolerance_mm: float = 0.1,
) -> Dataset:
    """The RT Structure Set of a (column, row, slice) label map on the grid ``affine`` (RAS,
    mm; the grid ``series`` converts to): ROI ``k`` is ``classes[k-1]`` (label value ``k``),
    coloured ``colours[k-1]`` (RGB 0..1), coded by ``properties[class]["type"]``
    (``SCHEME:VALUE:Meaning``) where given. Raises ``DicomSeriesError`` when a slice of the
    grid lies on no image of the series (within ``tolerance_mm``)."""
    headers = [identity.header(pydicom.dcmread(f, stop_before_pixels=True)) for f in series.files]
    frames = _frames(headers)
    lps = LPS_TO_RAS @ np.asarray(affine, float)
    references = []
    for k in range(labels.shape[2]):
        origin = lps[:3] @ [0, 0, k, 1]
        distances = [float(np.linalg.norm(p - origin)) for _, _, p in frames]
        best = int(np.argmin(distances))
        if distances[best] > tolerance_mm:
            raise DicomSeriesError(
                f"slice {k} of the segmentation lies on no image of the series (nearest"
                f" {distances[best]:.3f} mm away): it is not on the series' grid"
            )
        references.append(_image_reference(frames[best][0], frames[best][1]))
    first = headers[0]
    ds = Dataset()
    for keyword in PATIENT_STUDY_KEYWORDS:
        if keyword in first:
            setattr(ds, keyword, first[keyword].value)
    seed = [series.uid, model_id, identity.key.hex() if identity.key else "", "rtstruct"]
    _series_and_equipment(ds, identity.created(first), seed)
    frame_of_reference = str(first.FrameOfReferenceUID)
    ds.FrameOfReferenceUID = frame_of_reference
    ds.PositionReferenceIndicator = first.get("PositionReferenceIndicator", "")
    ds.ReferencedFrameOfReferenceSequence = [
        _referenced_frame_of_reference(first, frame_of_reference, frames)
    ]
    ds.StructureSetROISequence = []
    ds.ROIContourSequence = []
    ds.RTROIObservationsSequence = []
    properties = properties or {}
    for number, name in enumerate(classes, start=1):
        roi = Dataset()
        roi.ROINumber = number
        roi.ReferencedFrameOfReferenceUID = frame_of_reference
        roi.ROIName = name
        roi.ROIGenerationAlgorithm = "AUTOMATIC"
        roi.ROIGenerationDescription = f"cohortseg {__version__} {model_id}".strip()
        ds.StructureSetROISequence.append(roi)
        ds.ROIContourSequence.append(
            _roi_contours(labels == number, lps, references, number, colours[number - 1])
        )
        observation = Dataset()
        observation.ObservationNumber = number
        observation.ReferencedROINumber = number
        observation.RTROIInterpretedType = "ORGAN"
        observation.ROIInterpreter = ""
        if properties.get(name, {}).get("type"):
            observation.RTROIIdentificationCodeSequence = [_code(properties[name]["type"])]
        ds.RTROIObservationsSequence.append(observation)
    ds.ApprovalStatus = "UNAPPROVED"  # automatic contours: a person approves them
    identity.mark(ds)
    return ds


def _series_and_equipment(ds: Dataset, created: Mapping[str, str], seed: list[str]) -> None:
    """SOP Common, RT Series, General Equipment and the Structure Set's own attributes."""
    from datetime import datetime

    now = datetime.now()
    day = created.get("date", now.strftime("%Y%m%d"))
    time = created.get("time", now.strftime("%H%M%S"))
    ds.SOPClassUID = RT_STRUCTURE_SET_STORAGE
    ds.SOPInstanceUID = generate_uid(entropy_srcs=[*seed, "instance"])
    ds.InstanceCreationDate, ds.InstanceCreationTime = day, time
    ds.InstanceNumber = 1
    ds.Modality = "RTSTRUCT"
    ds.SeriesInstanceUID = generate_uid(entropy_srcs=[*seed, "series"])
    ds.SeriesNumber = 9001
    ds.SeriesDate, ds.SeriesTime = day, time
    ds.SeriesDescription = "cohortseg structures"
    ds.OperatorsName = ""
    ds.Manufacturer = "cohortseg"
    ds.ManufacturerModelName = "cohortseg 3D U-Net"
    ds.SoftwareVersions = __version__
    ds.StructureSetLabel = "cohortseg"
    ds.StructureSetName = "cohortseg segmentation"
    ds.StructureSetDate, ds.StructureSetTime = day, time


def _referenced_frame_of_reference(
    first: Dataset, frame_of_reference: str, frames: Sequence[tuple[Dataset, int | None, object]]
) -> Dataset:
    """The Frame of Reference, study and series every contour's image belongs to."""
    series = Dataset()
    series.SeriesInstanceUID = first.SeriesInstanceUID
    series.ContourImageSequence = [_image_reference(h, f) for h, f, _ in frames]
    study = Dataset()
    study.ReferencedSOPClassUID = STUDY_SOP_CLASS
    study.ReferencedSOPInstanceUID = first.StudyInstanceUID
    study.RTReferencedSeriesSequence = [series]
    item = Dataset()
    item.FrameOfReferenceUID = frame_of_reference
    item.RTReferencedStudySequence = [study]
    return item


def _roi_contours(
    mask: np.ndarray,
    lps: np.ndarray,
    references: Sequence[Dataset],
    number: int,
    colour: tuple[float, float, float],
) -> Dataset:
    """One ROI's contours, slice by slice, each referencing its image."""
    item = Dataset()
    item.ReferencedROINumber = number
    item.ROIDisplayColor = [int(round(c * 255)) for c in colour]
    contours = []
    for k in np.flatnonzero(mask.any(axis=(0, 1))):
        for points in slice_contours(mask[:, :, k]):
            voxels = np.column_stack([points, np.full(len(points), k), np.ones(len(points))])
            contour = Dataset()
            contour.ContourNumber = len(contours) + 1
            contour.ContourImageSequence = [references[k]]
            contour.ContourGeometricType = "CLOSED_PLANAR"
            contour.NumberOfContourPoints = len(points)
            contour.ContourData = _ds(voxels @ lps[:3].T)
            contours.append(contour)
    if contours:
        item.ContourSequence = contours
    return item


def write_rtstruct(
    path: str | os.PathLike[str],
    labels: np.ndarray,
    affine: np.ndarray,
    series: Series,
    identity: Identity,
    classes: Sequence[str],
    **kwargs,
) -> None:
    """Write :func:`rtstruct_dataset` (its keyword arguments: colours, properties,
    model_id, tolerance_mm) as a DICOM file."""
    ds = rtstruct_dataset(labels, affine, series, identity, classes, **kwargs)
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    with atomic_write(path) as tmp:
        pydicom.dcmwrite(tmp, ds, enforce_file_format=True)
