"""DICOM Segmentation objects (highdicom): a SEG given as a subject's label, read onto its
image's grid; and a segmentation written as a SEG that references its source series.

Its patient and study come from :class:`~cohortseg.dicom.identity.Identity`: the source's
(``dicom.seg_identity: source``) or the source's headers de-identified by PS3.15's Basic
Profile (``pseudonym``; in pseudonymised runs every UID derived from the key). A SEG label whose
segments overlap is refused naming the segments (a label map holds one class per voxel).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping, Sequence

import nibabel as nib
import numpy as np
import pydicom
from pydicom.sr.codedict import codes
from pydicom.uid import generate_uid

from cohortseg import __version__
from cohortseg.core.io import atomic_write
from cohortseg.dicom.identity import Identity
from cohortseg.dicom.series import DicomSeriesError, Series


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
    identity: Identity,
    classes: Sequence[str],
    *,
    properties: Mapping[str, Mapping[str, str]] | None = None,
    colours: Sequence[tuple[float, float, float]],
    model_id: str = "",
) -> None:
    """Write a (column, row, slice) label map on the grid ``affine`` (RAS, mm; the grid
    ``series`` converts to) as a DICOM Segmentation (binary, one segment per class) that
    references ``series``' SOP instances and Frame of Reference, with the patient, study and
    UIDs that ``identity`` gives (the source's, or de-identified: UIDs derived from the key in
    pseudonymised runs). ``model_id`` names the model in the algorithm's version and seeds the
    SEG's own UIDs, so that the same model and series give the same UIDs.
    """
    import highdicom as hd

    sources = [identity.header(pydicom.dcmread(f, stop_before_pixels=True)) for f in series.files]
    volume = labels_volume(labels, affine, str(sources[0].FrameOfReferenceUID))
    seed = [series.uid, model_id, identity.key.hex() if identity.key else ""]
    created = identity.created(sources[0])
    dates = (
        {
            "content_date": created["date"],
            "content_time": created["time"],
            "series_date": created["date"],
            "series_time": created["time"],
        }
        if created
        else {}
    )
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
            **dates,
        )
    if created:
        seg.InstanceCreationDate, seg.InstanceCreationTime = created["date"], created["time"]
    identity.mark(seg)
    with atomic_write(path) as tmp:
        seg.save_as(tmp)


def read_dicom_seg(path: str | os.PathLike[str], classes: Sequence[str]):
    """A DICOM SEG as a label map (highdicom Volume, (slice, row, column), uint8): segments
    whose labels are all class names get those classes' values; otherwise each segment's
    number is its label value."""
    import highdicom as hd

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            seg = hd.seg.segread(path)
        except (AttributeError, KeyError, TypeError, ValueError) as exc:
            raise DicomSeriesError(
                f"not a readable DICOM Segmentation ({type(exc).__name__}: {exc})"
            ) from None
        try:
            volume = seg.get_volume(combine_segments=True, dtype=np.uint8)
        except RuntimeError:  # highdicom's answer to overlapping segments
            volume = None
    if volume is None:  # (asked outside the handler: highdicom's frame index is busy there)
        raise DicomSeriesError(overlap_problem(seg))
    names = {int(s.SegmentNumber): str(s.SegmentLabel) for s in seg.SegmentSequence}
    if names and all(n in classes for n in names.values()):
        lut = np.zeros(max(names) + 1, np.uint8)
        for number, name in names.items():
            lut[number] = classes.index(name) + 1
        volume = volume.with_array(lut[volume.array])
    return volume


def overlap_problem(seg) -> str:
    """Which segments of a SEG (highdicom ``Segmentation``) overlap, and in how many voxels."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        masks = seg.get_volume(combine_segments=False, dtype=np.uint8).array > 0
    numbers = [int(s.SegmentNumber) for s in seg.SegmentSequence]
    names = {int(s.SegmentNumber): str(s.SegmentLabel) for s in seg.SegmentSequence}
    pairs = []
    for a in range(masks.shape[-1]):
        for b in range(a + 1, masks.shape[-1]):
            shared = int(np.count_nonzero(masks[..., a] & masks[..., b]))
            if shared:
                na, nb = numbers[a], numbers[b]
                pairs.append(f"{na} {names[na]!r} and {nb} {names[nb]!r} in {shared} voxel(s)")
    return (
        f"overlapping segments ({'; '.join(pairs) or 'SegmentsOverlap YES'}): a label map holds"
        " one class per voxel; give a SEG whose segments do not overlap, or the label as NIfTI"
    )


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
