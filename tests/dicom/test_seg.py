"""DICOM SEG out (and in): readable by highdicom and pydicom, referencing its source series,
voxel for voxel the NIfTI segmentation, and carrying no patient or institution attribute."""

from __future__ import annotations

import highdicom as hd
import numpy as np
import pydicom
import pytest

from cohortseg.dicom.seg import seg_label_on_grid, write_dicom_seg
from cohortseg.dicom.series import find_series, read_series, select_series
from cohortseg.dicom.writers import DEMO_PHI, along_normal, write_series
from cohortseg.inputs.demo import demo_phantom

CLASSES = ["organ", "shell", "tube"]
COLOURS = [(1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0)]


def source(tmp_path, multi_frame=False, seed=4):
    image, label, affine = demo_phantom([28, 24, 12], [1.7, 1.9, 2.4], seed)
    affine, (image, label) = along_normal(affine, image, label)
    write_series(tmp_path / "series", image, affine, seed=seed, multi_frame=multi_frame)
    series = select_series(find_series(tmp_path / "series")[0], None)
    converted = read_series(series, 0.1)
    return series, converted, label


def write(tmp_path, series, converted, labels, **kwargs):
    out = tmp_path / "seg.dcm"
    write_dicom_seg(
        out, labels, converted.affine, series, "sub-0001", CLASSES, colours=COLOURS, **kwargs
    )
    return out


@pytest.mark.parametrize("multi_frame", [False, True])
def test_seg_is_voxel_for_voxel_the_segmentation_and_references_its_series(tmp_path, multi_frame):
    series, converted, label = source(tmp_path, multi_frame)
    out = write(tmp_path, series, converted, label, model_id="0123abcd")
    ds = pydicom.dcmread(out)
    assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.66.4"  # Segmentation Storage
    sources = [pydicom.dcmread(f, stop_before_pixels=True) for f in series.files]
    assert ds.FrameOfReferenceUID == sources[0].FrameOfReferenceUID
    assert ds.StudyInstanceUID == sources[0].StudyInstanceUID
    referenced = ds.ReferencedSeriesSequence[0]
    assert referenced.SeriesInstanceUID == series.uid
    assert {i.ReferencedSOPInstanceUID for i in referenced.ReferencedInstanceSequence} == {
        s.SOPInstanceUID for s in sources
    }
    segments = ds.SegmentSequence
    assert [s.SegmentLabel for s in segments] == CLASSES
    assert all("RecommendedDisplayCIELabValue" in s for s in segments)
    assert (
        segments[0].SegmentedPropertyCategoryCodeSequence[0].CodeMeaning == "Anatomical Structure"
    )
    assert segments[0].SegmentationAlgorithmIdentificationSequence[0].AlgorithmName == "cohortseg"
    assert "0123abcd" in segments[0].SegmentationAlgorithmIdentificationSequence[0].AlgorithmVersion
    # read back by highdicom onto the NIfTI's grid: the same voxels
    back = seg_label_on_grid(out, CLASSES, converted.affine, label.shape)
    np.testing.assert_array_equal(back, label)
    assert hd.seg.segread(out).number_of_segments == 3


def test_seg_carries_no_patient_or_institution_attribute(tmp_path):
    series, converted, label = source(tmp_path)
    out = write(tmp_path, series, converted, label)
    raw = out.read_bytes()
    for value in DEMO_PHI.values():
        assert value.encode() not in raw, value
    ds = pydicom.dcmread(out)
    assert str(ds.PatientName) == "sub-0001" and ds.PatientID == "sub-0001"
    assert ds.PatientBirthDate == "" and ds.AccessionNumber == "" and ds.StudyDate == ""


def test_pseudonymised_seg_has_new_uids_derived_from_the_key(tmp_path):
    series, converted, label = source(tmp_path)
    originals = {
        str(v.value)
        for f in series.files
        for v in pydicom.dcmread(f, stop_before_pixels=True).iterall()
        if v.VR == "UI" and not str(v.value).startswith("1.2.840.10008")
    }
    out = write(tmp_path, series, converted, label, key=b"secret")
    raw = out.read_bytes()
    assert not any(uid.encode() in raw for uid in originals)
    first = pydicom.dcmread(out)
    again = pydicom.dcmread(write(tmp_path, series, converted, label, key=b"secret"))
    assert first.FrameOfReferenceUID == again.FrameOfReferenceUID
    assert first.SOPInstanceUID == again.SOPInstanceUID
    other = pydicom.dcmread(write(tmp_path, series, converted, label, key=b"another key"))
    assert other.FrameOfReferenceUID != first.FrameOfReferenceUID
    np.testing.assert_array_equal(
        seg_label_on_grid(out, CLASSES, converted.affine, label.shape), label
    )


def test_empty_segmentation_and_coded_properties(tmp_path):
    series, converted, label = source(tmp_path)
    empty = np.zeros_like(label)
    properties = {"tube": {"type": "SCT:91747007:Lumen of blood vessel"}}
    out = write(tmp_path, series, converted, empty, properties=properties)
    ds = pydicom.dcmread(out)
    assert ds.SegmentSequence[2].SegmentedPropertyTypeCodeSequence[0].CodeValue == "91747007"
    np.testing.assert_array_equal(
        seg_label_on_grid(out, CLASSES, converted.affine, label.shape), empty
    )


def test_seg_label_maps_segments_to_classes_by_name(tmp_path):
    """A SEG given as a subject's label, its segments named in another order than the config's
    classes: each segment's voxels get its class's value."""
    series, converted, label = source(tmp_path)
    out = write(tmp_path, series, converted, label)
    reordered = ["tube", "organ", "shell"]
    back = seg_label_on_grid(out, reordered, converted.affine, label.shape)
    for value, name in enumerate(CLASSES, start=1):
        np.testing.assert_array_equal(back == reordered.index(name) + 1, label == value)
