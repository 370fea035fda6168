"""RT Structure Sets out: one ROI per class, closed planar contours on the image planes they
reference, valid for dciodvfy, and read back by an independent reader (pydicom, each contour
mapped onto its referenced image's plane from that image's own tags, filled with
skimage.draw.polygon by the even-odd rule) to the NIfTI segmentation, Dice >= 0.95 per class
and every differing voxel within one voxel of the boundary, on oblique MR (one file per slice
and multi-frame) and CT series."""

from __future__ import annotations

import os
from collections.abc import Iterable

import numpy as np
import pydicom
import pytest
from scipy import ndimage
from skimage.draw import polygon

from cohortseg.dicom.identity import Identity
from cohortseg.dicom.rtstruct import slice_contours, write_rtstruct
from cohortseg.dicom.series import DicomSeriesError, find_series, read_series, select_series
from cohortseg.dicom.writers import DEMO_PHI, along_normal, write_series
from cohortseg.inputs.demo import demo_phantom
from tests.dicom.dicom_tools import dciodvfy_errors

CLASSES = ["organ", "shell", "tube"]
COLOURS = [(1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0)]


# -- the independent reader -----------------------------------------------------------------


def image_planes(files: Iterable[str | os.PathLike[str]]) -> dict:
    """(SOPInstanceUID, frame number or None) → (ImagePositionPatient, row cosine, column
    cosine, PixelSpacing (between rows, between columns), (Rows, Columns)), from each image's
    own tags (per-frame functional groups for multi-frame images)."""
    planes = {}
    for f in files:
        ds = pydicom.dcmread(f, stop_before_pixels=True)
        shape = (int(ds.Rows), int(ds.Columns))
        if "PerFrameFunctionalGroupsSequence" in ds:
            shared = ds.SharedFunctionalGroupsSequence[0]
            for n, frame in enumerate(ds.PerFrameFunctionalGroupsSequence, start=1):
                groups = {
                    name: (frame if name in frame else shared)[name][0]
                    for name in (
                        "PlaneOrientationSequence",
                        "PixelMeasuresSequence",
                        "PlanePositionSequence",
                    )
                }
                iop = np.asarray(groups["PlaneOrientationSequence"].ImageOrientationPatient, float)
                spacing = np.asarray(groups["PixelMeasuresSequence"].PixelSpacing, float)
                ipp = np.asarray(groups["PlanePositionSequence"].ImagePositionPatient, float)
                planes[(ds.SOPInstanceUID, n)] = (ipp, iop[:3], iop[3:], spacing, shape)
        else:
            iop = np.asarray(ds.ImageOrientationPatient, float)
            ipp = np.asarray(ds.ImagePositionPatient, float)
            spacing = np.asarray(ds.PixelSpacing, float)
            planes[(ds.SOPInstanceUID, None)] = (ipp, iop[:3], iop[3:], spacing, shape)
    return planes


def rasterise(rtstruct, files) -> dict[str, np.ndarray]:
    """ROI name → (column, row, slice) mask, slices sorted along the slice normal: every
    contour filled on the plane of the image it references (even-odd: holes are contours)."""
    planes = image_planes(files)
    ds = pydicom.dcmread(rtstruct)
    names = {int(r.ROINumber): str(r.ROIName) for r in ds.StructureSetROISequence}
    order = sorted(planes, key=lambda k: float(planes[k][0] @ np.cross(planes[k][1], planes[k][2])))
    out = {}
    for roi in ds.ROIContourSequence:
        masks = {k: np.zeros(p[4], bool) for k, p in planes.items()}
        for contour in roi.get("ContourSequence", []):
            assert contour.ContourGeometricType == "CLOSED_PLANAR"
            ref = contour.ContourImageSequence[0]
            frame = int(ref.ReferencedFrameNumber) if "ReferencedFrameNumber" in ref else None
            key = (ref.ReferencedSOPInstanceUID, frame)
            ipp, row_cosine, column_cosine, spacing, shape = planes[key]
            points = np.asarray(contour.ContourData, float).reshape(-1, 3) - ipp
            assert len(points) == int(contour.NumberOfContourPoints)
            normal = np.cross(row_cosine, column_cosine)
            assert np.abs(points @ normal).max() < 1e-3  # on its image's plane
            rows = points @ column_cosine / spacing[0]
            columns = points @ row_cosine / spacing[1]
            filled = np.zeros(shape, bool)
            filled[polygon(rows, columns, shape)] = True
            masks[key] ^= filled
        out[names[int(roi.ReferencedROINumber)]] = np.stack([masks[k].T for k in order], axis=2)
    return out


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2 * float(np.sum(a & b)) / max(1, int(a.sum() + b.sum()))


def near_boundary(mask: np.ndarray) -> np.ndarray:
    """Voxels within one voxel (26-neighbourhood) of the mask's boundary."""
    boundary = mask ^ ndimage.binary_erosion(mask)
    return ndimage.binary_dilation(boundary, np.ones((3, 3, 3), bool))


def assert_rasterises_back(rtstruct, files, label):
    masks = rasterise(rtstruct, files)
    assert list(masks) == CLASSES
    for value, name in enumerate(CLASSES, start=1):
        truth = label == value
        assert truth.any()
        assert dice(masks[name], truth) >= 0.95, name
        assert not np.any((masks[name] ^ truth) & ~near_boundary(truth)), name


# -- the tests -------------------------------------------------------------------------------


def source(tmp_path, seed=4, multi_frame=False, modality="MR"):
    image, label, affine = demo_phantom([40, 36, 20], [1.7, 1.9, 2.4], seed)
    affine, (image, label) = along_normal(affine, image, label)
    folder = tmp_path / f"{modality}{int(multi_frame)}-{seed}"
    write_series(folder, image, affine, seed=seed, multi_frame=multi_frame, modality=modality)
    series = select_series(find_series(folder)[0], None)
    return series, read_series(series, 0.1), label


@pytest.mark.parametrize(
    "modality, multi_frame, seed",
    [("MR", False, 4), ("MR", False, 7), ("MR", True, 4), ("CT", False, 5), ("CT", True, 6)],
)
def test_rtstruct_rasterises_back_to_the_segmentation(tmp_path, modality, multi_frame, seed):
    """Oblique demo phantoms (permuted, flipped, rotated axes; non-square pixels)."""
    series, converted, label = source(tmp_path, seed, multi_frame, modality)
    out = tmp_path / "rtstruct.dcm"
    write_rtstruct(
        out, label, converted.affine, series, Identity("sub-1"), CLASSES, colours=COLOURS
    )
    assert_rasterises_back(out, series.files, label)
    assert dciodvfy_errors([out]) == []


def test_rtstruct_references_its_series_and_names_each_class(tmp_path):
    series, converted, label = source(tmp_path)
    out = tmp_path / "rtstruct.dcm"
    properties = {"tube": {"type": "SCT:91747007:Lumen of blood vessel"}}
    write_rtstruct(
        out,
        label,
        converted.affine,
        series,
        Identity("sub-1"),
        CLASSES,
        colours=COLOURS,
        properties=properties,
        model_id="0123abcd",
    )
    ds = pydicom.dcmread(out)
    src = [pydicom.dcmread(f, stop_before_pixels=True) for f in series.files]
    assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.481.3" and ds.Modality == "RTSTRUCT"
    frame = ds.ReferencedFrameOfReferenceSequence[0]
    assert frame.FrameOfReferenceUID == src[0].FrameOfReferenceUID == ds.FrameOfReferenceUID
    study = frame.RTReferencedStudySequence[0]
    assert study.ReferencedSOPInstanceUID == src[0].StudyInstanceUID == ds.StudyInstanceUID
    referenced = study.RTReferencedSeriesSequence[0]
    assert referenced.SeriesInstanceUID == series.uid
    images = {i.ReferencedSOPInstanceUID for i in referenced.ContourImageSequence}
    assert images == {s.SOPInstanceUID for s in src}
    assert [r.ROIName for r in ds.StructureSetROISequence] == CLASSES
    assert [list(r.ROIDisplayColor) for r in ds.ROIContourSequence][2] == [0, 0, 255]
    assert ds.RTROIObservationsSequence[2].RTROIIdentificationCodeSequence[0].CodeValue == (
        "91747007"
    )
    assert "0123abcd" in ds.StructureSetROISequence[0].ROIGenerationDescription
    assert ds.ApprovalStatus == "UNAPPROVED"
    # holes: the shell is a ring on slices through its core, two contours on one image
    shell = ds.ROIContourSequence[1].ContourSequence
    per_image = {}
    for c in shell:
        uid = c.ContourImageSequence[0].ReferencedSOPInstanceUID
        per_image[uid] = per_image.get(uid, 0) + 1
    assert max(per_image.values()) >= 2


def test_rtstruct_identity_follows_seg_identity(tmp_path):
    series, converted, label = source(tmp_path)
    out = tmp_path / "source.dcm"
    write_rtstruct(
        out, label, converted.affine, series, Identity("sub-1", "source"), CLASSES, colours=COLOURS
    )
    ds = pydicom.dcmread(out)
    src = pydicom.dcmread(series.files[0], stop_before_pixels=True)
    assert ds.PatientID == DEMO_PHI["PatientID"] and ds.StudyInstanceUID == src.StudyInstanceUID
    assert ds.AccessionNumber == DEMO_PHI["AccessionNumber"]
    assert "PatientIdentityRemoved" not in ds
    keyed = tmp_path / "keyed.dcm"
    identity = Identity("sub-1", key=b"secret")
    write_rtstruct(keyed, label, converted.affine, series, identity, CLASSES, colours=COLOURS)
    ds = pydicom.dcmread(keyed)
    assert ds.PatientID == "sub-1" and ds.PatientIdentityRemoved == "YES"
    assert ds.StudyInstanceUID != src.StudyInstanceUID
    assert ds.StructureSetDate == "19000101"  # no processing date (dates removed)
    raw = keyed.read_bytes()
    uids = {str(v.value) for v in src.iterall() if v.VR == "UI"}
    assert not any(u.encode() in raw for u in uids if not u.startswith("1.2.840.10008."))
    for value in DEMO_PHI.values():
        assert value.encode() not in raw, value
    assert dciodvfy_errors([out, keyed]) == []


def test_a_grid_off_the_series_is_refused(tmp_path):
    series, converted, label = source(tmp_path)
    shifted = converted.affine.copy()
    shifted[:3, 3] += 5.0
    with pytest.raises(DicomSeriesError, match="lies on no image of the series"):
        write_rtstruct(
            tmp_path / "x.dcm", label, shifted, series, Identity("s"), CLASSES, colours=COLOURS
        )


def test_slice_contours_fill_back_exactly():
    rng = np.random.default_rng(0)
    mask = ndimage.binary_opening(rng.random((30, 26)) > 0.45)
    mask[10:20, 8:18] = True
    mask[13:17, 11:15] = False  # a hole
    filled = np.zeros(mask.shape, bool)
    for points in slice_contours(mask):
        filled[polygon(points[:, 0], points[:, 1], mask.shape)] ^= True
    np.testing.assert_array_equal(filled, mask)
