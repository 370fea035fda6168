"""DICOM SEG out (and in): readable by highdicom and pydicom, referencing its source series,
voxel for voxel the NIfTI segmentation, valid for dciodvfy, de-identified (or, with
seg_identity: source, filed with its source's patient and study); a SEG label with overlapping
segments refused naming them."""

from __future__ import annotations

import warnings

import highdicom as hd
import numpy as np
import pydicom
import pytest

from cohortseg.core.errors import CohortsegError
from cohortseg.dicom.identity import Identity
from cohortseg.dicom.seg import seg_label_on_grid, write_dicom_seg
from cohortseg.dicom.series import DicomSeriesError, find_series, read_series, select_series
from cohortseg.dicom.writers import DEMO_PHI, along_normal, write_series
from cohortseg.inputs.demo import demo_phantom
from tests.dicom.dicom_tools import dciodvfy_errors

CLASSES = ["organ", "shell", "tube"]
COLOURS = [(1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0)]


def source(tmp_path, multi_frame=False, seed=4):
    image, label, affine = demo_phantom([28, 24, 12], [1.7, 1.9, 2.4], seed)
    affine, (image, label) = along_normal(affine, image, label)
    write_series(tmp_path / "series", image, affine, seed=seed, multi_frame=multi_frame)
    series = select_series(find_series(tmp_path / "series")[0], None)
    converted = read_series(series, 0.1)
    return series, converted, label


def write(tmp_path, series, converted, labels, identity=None, name="seg.dcm", **kwargs):
    out = tmp_path / name
    identity = identity or Identity("sub-0001")
    write_dicom_seg(
        out, labels, converted.affine, series, identity, CLASSES, colours=COLOURS, **kwargs
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
    # PS3.15's Basic Profile, with Retain UIDs (no key: the SEG files with the source study)
    assert ds.PatientIdentityRemoved == "YES"
    codes = [c.CodeValue for c in ds.DeidentificationMethodCodeSequence]
    assert codes == ["113100", "113110"]
    assert ds.LongitudinalTemporalInformationModified == "REMOVED"
    assert "SAG_3D_DESS" not in str(ds.get("SeriesDescription", ""))


def test_pseudonymised_seg_has_new_uids_derived_from_the_key(tmp_path):
    series, converted, label = source(tmp_path)
    originals = {
        str(v.value)
        for f in series.files
        for v in pydicom.dcmread(f, stop_before_pixels=True).iterall()
        if v.VR == "UI" and not str(v.value).startswith("1.2.840.10008")
    }
    keyed = Identity("sub-0001", key=b"secret")
    out = write(tmp_path, series, converted, label, keyed)
    raw = out.read_bytes()
    assert not any(uid.encode() in raw for uid in originals)
    first = pydicom.dcmread(out)
    again = pydicom.dcmread(write(tmp_path, series, converted, label, keyed, "again.dcm"))
    assert first.FrameOfReferenceUID == again.FrameOfReferenceUID
    assert first.SOPInstanceUID == again.SOPInstanceUID
    assert first.ContentDate == again.ContentDate  # no processing date: the same bytes
    other_key = Identity("sub-0001", key=b"another key")
    other = pydicom.dcmread(write(tmp_path, series, converted, label, other_key, "other.dcm"))
    assert other.FrameOfReferenceUID != first.FrameOfReferenceUID
    codes = [c.CodeValue for c in first.DeidentificationMethodCodeSequence]
    assert codes == ["113100"]  # UIDs replaced: no Retain UIDs Option
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


def test_seg_identity_source_files_the_seg_with_its_study(tmp_path):
    """dicom.seg_identity: source (runs that are not pseudonymised): the SEG names the source's
    patient and study, so that the PACS files it with them."""
    series, converted, label = source(tmp_path)
    out = write(tmp_path, series, converted, label, Identity("sub-0001", "source"))
    ds = pydicom.dcmread(out)
    src = pydicom.dcmread(series.files[0], stop_before_pixels=True)
    assert ds.PatientID == src.PatientID == DEMO_PHI["PatientID"]
    assert ds.StudyInstanceUID == src.StudyInstanceUID
    assert str(ds.PatientName) == DEMO_PHI["PatientName"]
    assert ds.AccessionNumber == DEMO_PHI["AccessionNumber"]
    assert ds.PatientBirthDate == DEMO_PHI["PatientBirthDate"]
    assert ds.StudyDate == src.StudyDate and ds.StudyID == src.StudyID
    assert "PatientIdentityRemoved" not in ds
    referenced = ds.ReferencedSeriesSequence[0]
    assert referenced.SeriesInstanceUID == src.SeriesInstanceUID


def test_seg_identity_source_is_refused_in_pseudonymised_runs():
    with pytest.raises(CohortsegError, match="pseudonymised run"):
        Identity("sub-0001", "source", key=b"secret")


@pytest.mark.parametrize("multi_frame", [False, True])
def test_every_seg_passes_dciodvfy(tmp_path, multi_frame):
    series, converted, label = source(tmp_path, multi_frame)
    identities = {
        "source": Identity("sub-0001", "source"),
        "pseudonym": Identity("sub-0001"),
        "keyed": Identity("sub-0001", key=b"secret"),
    }
    outs = [
        write(tmp_path, series, converted, label, identity, f"{name}.dcm")
        for name, identity in identities.items()
    ]
    outs.append(write(tmp_path, series, converted, np.zeros_like(label), name="empty.dcm"))
    assert dciodvfy_errors(outs) == []


def write_overlapping_seg(path, series, label, affine, classes=CLASSES):
    """A SEG of ``series`` (converted to the grid ``affine``) whose first segment overlaps the
    second (written with highdicom, as another tool might); returns the shared voxel count."""
    import highdicom as hd

    from cohortseg.dicom.seg import labels_volume, segment_descriptions

    as_given = Identity("another tool", "source")  # the source's header, Type 2 present
    sources = [as_given.header(pydicom.dcmread(f, stop_before_pixels=True)) for f in series.files]
    masks = [label == 1, (label == 1) | (label == 2), label == 3]
    frame = str(sources[0].FrameOfReferenceUID)
    volumes = [labels_volume(m.astype(np.uint8), affine, frame) for m in masks]
    stacked = hd.Volume(
        np.stack([v.array for v in volumes], axis=-1),
        volumes[0].affine,
        coordinate_system="PATIENT",
        frame_of_reference_uid=frame,
        channels={"SegmentNumber": [1, 2, 3]},
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        seg = hd.seg.Segmentation(
            source_images=sources,
            pixel_array=stacked,
            segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
            segment_descriptions=segment_descriptions(classes, {}, COLOURS, "other tool"),
            series_instance_uid=hd.UID(),
            series_number=2,
            sop_instance_uid=hd.UID(),
            instance_number=1,
            manufacturer="another tool",
            manufacturer_model_name="another tool",
            software_versions="0",
            device_serial_number="0",
        )
    seg.save_as(path)
    return int(np.count_nonzero(masks[0] & masks[1]))


def test_a_seg_label_with_overlapping_segments_is_refused_naming_them(tmp_path):
    series, converted, label = source(tmp_path)
    out = tmp_path / "overlap.dcm"
    shared = write_overlapping_seg(out, series, label, converted.affine)
    assert shared > 0
    with pytest.raises(DicomSeriesError) as err:
        seg_label_on_grid(out, CLASSES, converted.affine, label.shape)
    text = str(err.value)
    assert text.startswith(f"overlapping segments (1 'organ' and 2 'shell' in {shared} voxel(s))")
