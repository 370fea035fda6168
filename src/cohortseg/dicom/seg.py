"""DICOM Segmentation objects (highdicom): a SEG given as a subject's label, read onto its
image's grid; and a segmentation written as a SEG that references its source series.

What of the source series reaches a SEG is an allowlist (:data:`REFERENCE_KEYWORDS`): geometry,
the UIDs that tie the SEG to its series, and the patient module with the subject id (or
pseudonym) as name and ID; no birth date, accession number, institution, physician or date
ever leaves. In pseudonymised runs every UID is replaced by one derived from the key.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Mapping, Sequence

import nibabel as nib
import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.uid import generate_uid

from cohortseg import __version__
from cohortseg.core.io import atomic_write
from cohortseg.dicom.series import DicomSeriesError, Series

#: Source attributes a SEG may carry (everything else of the source is dropped).
REFERENCE_KEYWORDS = (
    "SOPClassUID",
    "SOPInstanceUID",
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "FrameOfReferenceUID",
    "Modality",
    "Rows",
    "Columns",
    "NumberOfFrames",
    "SamplesPerPixel",
    "PhotometricInterpretation",
    "BitsAllocated",
    "BitsStored",
    "HighBit",
    "PixelRepresentation",
    "ImagePositionPatient",
    "ImageOrientationPatient",
    "PixelSpacing",
    "SliceThickness",
    "SpacingBetweenSlices",
    "InstanceNumber",
)


UID_KEYWORDS = ("SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID", "FrameOfReferenceUID")


#: Functional groups of multi-frame sources that say where frames lie (others are dropped).
GEOMETRY_GROUPS = ("PlanePositionSequence", "PlaneOrientationSequence", "PixelMeasuresSequence")


#: Type-2 patient and study attributes highdicom copies: present and empty.
EMPTY_KEYWORDS = (
    "PatientBirthDate",
    "PatientSex",
    "StudyDate",
    "StudyTime",
    "ReferringPhysicianName",
    "AccessionNumber",
    "StudyID",
)


def derived_uid(uid: str, key: bytes) -> str:
    """A UID standing for ``uid`` in pseudonymised outputs: the same for the same key, and
    telling nothing of ``uid`` without it (``2.25.`` and a hash)."""
    return generate_uid(prefix="2.25.", entropy_srcs=[key.hex(), uid])


def _geometry_groups(items: Sequence[Dataset]) -> list[Dataset]:
    out = []
    for item in items:
        kept = Dataset()
        for keyword in GEOMETRY_GROUPS:
            if keyword in item:
                kept[keyword] = item[keyword]
        out.append(kept)
    return out


def reference_dataset(source: Dataset, subject: str, key: bytes | None) -> Dataset:
    """What a SEG may know of one source image: :data:`REFERENCE_KEYWORDS`, the geometry
    functional groups, PatientName and PatientID set to ``subject`` (the id used in results),
    empty type-2 patient and study attributes; UIDs replaced by :func:`derived_uid` when
    ``key`` is given."""
    ds = Dataset()
    for keyword in REFERENCE_KEYWORDS:
        if keyword in source:
            setattr(ds, keyword, source[keyword].value)
    for keyword in ("SharedFunctionalGroupsSequence", "PerFrameFunctionalGroupsSequence"):
        if keyword in source:
            setattr(ds, keyword, _geometry_groups(source[keyword].value))
    ds.PatientName = subject
    ds.PatientID = subject
    for keyword in EMPTY_KEYWORDS:
        setattr(ds, keyword, "")
    if key is not None:
        for keyword in UID_KEYWORDS:
            if keyword in ds:
                setattr(ds, keyword, derived_uid(str(getattr(ds, keyword)), key))
    return ds


def _parse_code(text: str):
    """``SCHEME:VALUE:Meaning`` (e.g. ``SCT:10200004:Liver``) as a highdicom coded concept."""
    from highdicom.sr import CodedConcept

    scheme, value, meaning = (text.split(":", 2) + ["", ""])[:3]
    if not (scheme and value and meaning):
        raise DicomSeriesError(f"segment property {text!r} is not SCHEME:VALUE:Meaning")
    return CodedConcept(value=value, scheme_designator=scheme, meaning=meaning)


def segment_descriptions(
    classes: Sequence[str],
    properties: Mapping[str, Mapping[str, str]],
    colours: Sequence[tuple[float, float, float]],
    algorithm_version: str,
) -> list:
    """One highdicom ``SegmentDescription`` per class (segment number = label value): its name,
    display colour (RGB 0..1), coded property category and type (``properties[class]``'s
    ``category``/``type`` as ``SCHEME:VALUE:Meaning``; default Anatomical Structure / Tissue),
    and cohortseg as the algorithm."""
    import highdicom as hd

    algorithm = hd.AlgorithmIdentificationSequence(
        name="cohortseg", family=codes.DCM.ArtificialIntelligence, version=algorithm_version
    )
    out = []
    for number, name in enumerate(classes, start=1):
        spec = properties.get(name, {})
        category = spec.get("category")
        kind = spec.get("type")
        rgb = np.round(np.asarray(colours[number - 1]) * 255).astype(int)
        out.append(
            hd.seg.SegmentDescription(
                segment_number=number,
                segment_label=name,
                segmented_property_category=_parse_code(category)
                if category
                else codes.SCT.AnatomicalStructure,
                segmented_property_type=_parse_code(kind) if kind else codes.SCT.Tissue,
                algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
                algorithm_identification=algorithm,
                display_color=hd.color.CIELabColor.from_rgb(*map(int, rgb)),
            )
        )
    return out


def labels_volume(labels: np.ndarray, affine: np.ndarray, frame_of_reference_uid: str):
    """A (column, row, slice) label map on a converted series' RAS grid as a highdicom Volume
    in highdicom's (slice, row, column) order, ready to be a SEG's pixel array."""
    import highdicom as hd

    image = nib.Nifti1Image(np.asarray(labels, np.uint8), affine)
    volume = hd.Volume.from_nibabel(image, frame_of_reference_uid=frame_of_reference_uid)
    return volume.permute_spatial_axes([2, 1, 0])


def write_dicom_seg(
    path: str | os.PathLike[str],
    labels: np.ndarray,
    affine: np.ndarray,
    series: Series,
    subject: str,
    classes: Sequence[str],
    *,
    properties: Mapping[str, Mapping[str, str]] | None = None,
    colours: Sequence[tuple[float, float, float]],
    model_id: str = "",
    key: bytes | None = None,
) -> None:
    """Write a (column, row, slice) label map on the grid ``affine`` (RAS, mm; the grid
    ``series`` converts to) as a DICOM Segmentation (binary, one segment per class) that
    references ``series``' SOP instances and Frame of Reference. With ``key`` (pseudonymised
    runs) every UID is derived from the key. ``model_id`` names the model in the algorithm's
    version and seeds the SEG's own UIDs, so that the same model and series give the same UIDs.
    """
    import highdicom as hd

    sources = [
        reference_dataset(pydicom.dcmread(f, stop_before_pixels=True), subject, key)
        for f in series.files
    ]
    volume = labels_volume(labels, affine, str(sources[0].FrameOfReferenceUID))
    seed = [series.uid, model_id, key.hex() if key else ""]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # highdicom warns about optional attributes
        seg = hd.seg.Segmentation(
            source_images=sources,
            pixel_array=volume,
            segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
            segment_descriptions=segment_descriptions(
                classes, properties or {}, colours, f"{__version__} {model_id}".strip()
            ),
            series_instance_uid=generate_uid(entropy_srcs=[*seed, "series"]),
            series_number=9000,
            sop_instance_uid=generate_uid(entropy_srcs=[*seed, "instance"]),
            instance_number=1,
            manufacturer="cohortseg",
            manufacturer_model_name="cohortseg 3D U-Net",
            software_versions=__version__,
            device_serial_number="0",
            series_description="cohortseg segmentation",
            omit_empty_frames=bool(np.any(labels)),
        )
    with atomic_write(path) as tmp:
        seg.save_as(tmp)


def read_dicom_seg(path: str | os.PathLike[str], classes: Sequence[str]):
    """A DICOM SEG as a label map (highdicom Volume, (slice, row, column), uint8): segments
    whose labels are all class names get those classes' values; otherwise each segment's
    number is its label value."""
    import highdicom as hd

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        seg = hd.seg.segread(path)
        volume = seg.get_volume(combine_segments=True, dtype=np.uint8)
    names = {int(s.SegmentNumber): str(s.SegmentLabel) for s in seg.SegmentSequence}
    if names and all(n in classes for n in names.values()):
        lut = np.zeros(max(names) + 1, np.uint8)
        for number, name in names.items():
            lut[number] = classes.index(name) + 1
        volume = volume.with_array(lut[volume.array])
    return volume


def seg_label_on_grid(
    path: str | os.PathLike[str],
    classes: Sequence[str],
    affine: np.ndarray,
    shape: Sequence[int],
) -> np.ndarray:
    """A DICOM SEG label (:func:`read_dicom_seg`) as a uint8 (X, Y, Z) label map on the grid
    of ``shape`` voxels under the RAS ``affine`` (its image's; frames absent from the SEG are
    background). Raises ``DicomSeriesError`` when the SEG's frames do not lie on that grid."""
    import highdicom as hd

    volume = read_dicom_seg(path, classes)
    grid = nib.Nifti1Image(np.zeros(tuple(shape), np.uint8), affine)
    target = hd.Volume.from_nibabel(grid, frame_of_reference_uid=volume.frame_of_reference_uid)
    try:
        matched = volume.match_geometry(target.permute_spatial_axes([2, 1, 0]), tol=1e-3)
    except (RuntimeError, ValueError) as exc:
        raise DicomSeriesError(f"the SEG's frames do not lie on the image's grid ({exc})") from None
    return np.ascontiguousarray(matched.permute_spatial_axes([2, 1, 0]).array, np.uint8)


def shard_dicom_segs(
    cohort,
    privacy: Mapping,
    segmented: str | os.PathLike[str],
    classes: Sequence[str],
    dicom: Mapping,
    model: str | os.PathLike[str],
    manifest: str | os.PathLike[str],
    seg_path: Callable[[str], str],
) -> None:
    """The ``dicom_seg`` shard job: a SEG (written to ``seg_path(subject)``) for each
    segmentation that ``segmented`` (an inference manifest) lists of a subject whose image is a
    DICOM series, then ``manifest`` (subject, dicom_seg, SHA-256). ``cohort`` is the run's
    :class:`~cohortseg.workflow.cohort.WorkflowCohort`."""
    from cohortseg.core.cohort import is_dicom
    from cohortseg.core.colours import class_colour
    from cohortseg.core.errors import InvalidInputError
    from cohortseg.core.failures import for_each_subject
    from cohortseg.core.io import load_nifti, read_tsv, sha256_file, write_manifest
    from cohortseg.core.pseudonyms import load_key
    from cohortseg.dicom.series import find_series, select_series

    key = load_key(privacy) if privacy["pseudonymize"] else None
    model_id = sha256_file(model)[:16]
    colours = [class_colour(v) for v in range(1, len(classes) + 1)]
    rows = {r["subject"]: r for r in read_tsv(segmented)}
    subjects = [
        cohort.by_id[s] for s in rows if s in cohort.dicom and is_dicom(cohort.source(s).image)
    ]

    def one(subject):
        source = cohort.source(subject.subject)
        try:
            series = select_series(find_series(source.image)[0], source.series or dicom["series"])
        except DicomSeriesError as exc:
            raise InvalidInputError(subject.subject, source.image, str(exc)) from None
        labels, affine = load_nifti(
            rows[subject.subject]["segmentation"], subject.subject, np.uint8
        )
        out = seg_path(subject.subject)
        write_dicom_seg(
            out,
            labels,
            affine,
            series,
            subject.subject,
            classes,
            properties=dicom["segment_properties"],
            colours=colours,
            model_id=model_id,
            key=key,
        )
        return {"subject": subject.subject, "dicom_seg": out}

    write_manifest(manifest, for_each_subject(subjects, one), ["subject", "dicom_seg"], "dicom_seg")
