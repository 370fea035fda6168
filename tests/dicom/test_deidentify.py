"""PS3.15 Annex E de-identification: every attribute of Table E.1-1 planted in a source is
removed or replaced, private attributes, curves and overlays go, UIDs are replaced consistently,
the options (longitudinal dates, patient characteristics, safe descriptors) do what they say,
and the de-identified copies are valid images that convert like their source."""

from __future__ import annotations

import datetime

import numpy as np
import pydicom
import pytest
from pydicom.datadict import dictionary_has_tag, dictionary_VR
from pydicom.dataset import Dataset

from cohortseg.core.errors import CohortsegError
from cohortseg.dicom.basic_profile import TABLE_E1_1
from cohortseg.dicom.deidentify import (
    DeidentificationOptions,
    Deidentifier,
    date_shift_days,
    write_deidentified_series,
)
from cohortseg.dicom.identity import Identity, check_seg_identity, run_identities
from cohortseg.dicom.series import DicomSeriesError, find_series, read_series, select_series
from cohortseg.dicom.writers import DEMO_PHI, along_normal, write_series
from cohortseg.inputs.demo import demo_phantom
from tests.dicom.dicom_tools import dciodvfy_errors

KEY = b"test-key"


def series_files(tmp_path, multi_frame=False, modality="MR", seed=2):
    image, _, affine = demo_phantom([20, 18, 8], [1.7, 1.9, 2.4], seed)
    affine, (image,) = along_normal(affine, image)
    return write_series(
        tmp_path / f"{modality}{int(multi_frame)}",
        image,
        affine,
        multi_frame=multi_frame,
        modality=modality,
        seed=seed,
    )


def planted_value(tag: int, vr: str, k: int):
    """A value of ``vr`` that marks ``tag`` (``PHI{k}`` where text is allowed)."""
    text = {"PN": f"Phi^{k}", "CS": f"PHI{k}", "AE": f"PHI{k}", "UR": f"http://phi{k}"}
    if vr in text:
        return text[vr]
    if vr in ("LO", "SH", "LT", "ST", "UT", "UC"):
        return f"PHI{k} marker"
    values = {"DA": "20210315", "TM": "101112", "DT": "20210315101112", "AS": "042Y"}
    if vr in values:
        return values[vr]
    if vr == "UI":
        return f"1.2.3.4.5.{k}"
    if vr in ("IS", "DS"):
        return str(4000 + k)
    if vr in ("US", "SS", "UL", "SL", "UV", "SV"):
        return 42
    if vr in ("FL", "FD"):
        return 4.2
    if vr == "SQ":  # a reference, as most of the table's sequences hold
        item = Dataset()
        item.ReferencedSOPInstanceUID = f"1.2.3.4.5.{k}"
        return [item]
    return None


def planted_source(path) -> tuple[Dataset, dict[int, object]]:
    """A demo MR image with every attribute of Table E.1-1 that the dictionary knows set to a
    marked value (file meta and command groups aside)."""
    ds = pydicom.dcmread(path)
    planted = {}
    for k, tag in enumerate(TABLE_E1_1):
        if tag >> 16 in (0x0000, 0x0002) or not dictionary_has_tag(tag):
            continue
        vr = dictionary_VR(tag).split(" or ")[0]
        value = planted_value(tag, vr, k)
        if value is None or tag == 0x7FE00010:
            continue
        ds.add_new(tag, vr, value)
        planted[tag] = value
    return ds, planted


def test_every_attribute_of_table_e1_1_is_removed_or_replaced(tmp_path):
    source, planted = planted_source(series_files(tmp_path)[0])
    assert len(planted) > 500
    out = Deidentifier("sub-1", KEY).dataset(source)
    kept = []
    for tag, value in planted.items():
        if tag not in out or out[tag].value in (None, "", []):
            continue
        got = out[tag].value
        if tag in (0x00100010, 0x00100020):  # Patient's Name and ID: the pseudonym
            assert str(got) == "sub-1"
        elif dictionary_VR(tag) == "SQ":  # references kept with their UIDs replaced (U*)
            assert TABLE_E1_1[tag][0] == "X/Z/U*", hex(tag)
            assert got[0].ReferencedSOPInstanceUID != value[0].ReferencedSOPInstanceUID
        elif str(got) == str(value):
            kept.append(f"{tag:08X} {out[tag].keyword}")
    assert kept == []
    # and no marker anywhere in the bytes written
    path = tmp_path / "out.dcm"
    pydicom.dcmwrite(path, out, implicit_vr=False, little_endian=True)
    raw = path.read_bytes()
    assert b"PHI" not in raw and b"Phi^" not in raw and b"20210315" not in raw
    assert b"1.2.3.4.5." not in raw


def test_private_attributes_curves_and_overlays_are_removed(tmp_path):
    source = pydicom.dcmread(series_files(tmp_path)[0])
    block = source.private_block(0x0029, "ACME 1.0", create=True)
    block.add_new(0x10, "LO", "Roe^Richard private")
    source.add_new(0x60003000, "OB", b"\x01" * 8)  # overlay data
    source.add_new(0x60000010, "US", 8)
    source.add_new(0x50000005, "US", 1)  # a retired curve attribute
    out = Deidentifier("sub-1", KEY).dataset(source)
    assert not any(e.tag.is_private or e.tag.group in (0x5000, 0x6000) for e in out)


def test_uids_are_replaced_consistently_across_files_and_references(tmp_path):
    files = series_files(tmp_path)
    first, second = (pydicom.dcmread(f) for f in files[:2])
    reference = Dataset()
    reference.ReferencedSOPClassUID = first.SOPClassUID
    reference.ReferencedSOPInstanceUID = first.SOPInstanceUID
    second.ReferencedImageSequence = [reference]
    deid = Deidentifier("sub-1", KEY)
    a, b = deid.dataset(first), deid.dataset(second)
    assert a.StudyInstanceUID == b.StudyInstanceUID != first.StudyInstanceUID
    assert a.SeriesInstanceUID == b.SeriesInstanceUID != first.SeriesInstanceUID
    assert a.FrameOfReferenceUID == b.FrameOfReferenceUID != first.FrameOfReferenceUID
    assert a.SOPInstanceUID != b.SOPInstanceUID
    item = b.ReferencedImageSequence[0]
    assert item.ReferencedSOPInstanceUID == a.SOPInstanceUID
    assert item.ReferencedSOPClassUID == first.SOPClassUID  # the standard's own UIDs stay
    assert Deidentifier("sub-1", b"other").dataset(first).StudyInstanceUID != a.StudyInstanceUID
    # no key (runs that are not pseudonymised): the Retain UIDs Option
    kept = Deidentifier("sub-1", None).dataset(first)
    assert kept.StudyInstanceUID == first.StudyInstanceUID
    assert "113110" in [c.CodeValue for c in kept.DeidentificationMethodCodeSequence]


def test_the_profile_marks_every_object_and_names_its_options(tmp_path):
    source = pydicom.dcmread(series_files(tmp_path)[0])
    out = Deidentifier("sub-1", KEY).dataset(source)
    assert out.PatientIdentityRemoved == "YES"
    assert [c.CodeValue for c in out.DeidentificationMethodCodeSequence] == ["113100"]
    assert out.DeidentificationMethodCodeSequence[0].CodingSchemeDesignator == "DCM"
    assert out.DeidentificationMethod == "Basic Application Confidentiality Profile"
    assert out.LongitudinalTemporalInformationModified == "REMOVED"
    for keyword, value in DEMO_PHI.items():
        assert str(out.get(keyword, "")) != value, keyword
    assert not out.StudyDate and "SeriesDate" not in out and "SeriesDescription" not in out
    options = DeidentificationOptions(True, True, ("SAG_.*",))
    out = Deidentifier("sub-1", KEY, options).dataset(source)
    codes = [c.CodeValue for c in out.DeidentificationMethodCodeSequence]
    assert codes == ["113100", "113105", "113107", "113108"]
    assert len(out.DeidentificationMethod) == 4


def test_longitudinal_dates_shift_by_one_amount_per_subject(tmp_path):
    source = pydicom.dcmread(series_files(tmp_path)[0])
    source.AcquisitionDate = "20190415"
    source.AcquisitionDateTime = "20190415101500.5"
    source.AcquisitionTime = "101500"
    options = DeidentificationOptions(retain_longitudinal_dates=True)
    out = Deidentifier("sub-1", KEY, options).dataset(source)
    days = date_shift_days("sub-1", KEY)
    assert 1 <= days <= 3652

    def back(text):
        day = datetime.date(int(text[:4]), int(text[4:6]), int(text[6:8]))
        return (day - datetime.timedelta(days=days)).strftime("%Y%m%d")

    assert out.StudyDate == back(DEMO_PHI["StudyDate"])
    assert out.AcquisitionDate == back("20190415")  # the interval of 3 days is kept
    assert out.AcquisitionDateTime == back("20190415") + "101500.5"
    assert out.AcquisitionTime == "101500" and out.StudyTime == source.StudyTime
    assert out.LongitudinalTemporalInformationModified == "MODIFIED"
    assert DEMO_PHI["PatientBirthDate"] not in str(out)  # a birth date is never kept
    shifts = {date_shift_days(f"sub-{k}", KEY) for k in range(20)}
    assert len(shifts) > 15  # per subject
    # without a key: the dates as they are (Full Dates Option)
    full = Deidentifier("sub-1", None, options).dataset(source)
    assert full.StudyDate == DEMO_PHI["StudyDate"]
    assert full.LongitudinalTemporalInformationModified == "UNMODIFIED"
    assert "113106" in [c.CodeValue for c in full.DeidentificationMethodCodeSequence]


def test_descriptors_stay_only_where_a_safe_pattern_matches_all_of_them(tmp_path):
    source = pydicom.dcmread(series_files(tmp_path)[0])
    source.StudyDescription = "KNEE Roe Richard"
    source.ProtocolName = "SAG_3D_DESS"
    options = DeidentificationOptions(safe_descriptors=("SAG_3D_DESS", "COR_.*"))
    out = Deidentifier("sub-1", KEY, options).dataset(source)
    assert out.SeriesDescription == "SAG_3D_DESS" and out.ProtocolName == "SAG_3D_DESS"
    assert "StudyDescription" not in out
    source.SeriesDescription = "SAG_3D_DESS for Roe"
    assert "SeriesDescription" not in Deidentifier("sub-1", KEY, options).dataset(source)
    with pytest.raises(CohortsegError, match="is not a regular expression"):
        DeidentificationOptions.from_config(
            {
                "retain_longitudinal_dates": False,
                "retain_patient_characteristics": False,
                "safe_descriptors": ["(unclosed"],
            }
        )


def test_patient_characteristics_stay_only_with_their_option(tmp_path):
    source = pydicom.dcmread(series_files(tmp_path)[0])
    source.PatientSex, source.PatientAge, source.PatientWeight = "F", "061Y", "72"
    plain = Deidentifier("sub-1", KEY).dataset(source)
    assert not plain.PatientSex and "PatientAge" not in plain and "PatientWeight" not in plain
    options = DeidentificationOptions(retain_patient_characteristics=True)
    kept = Deidentifier("sub-1", KEY, options).dataset(source)
    assert (kept.PatientSex, kept.PatientAge, kept.PatientWeight) == ("F", "061Y", 72)


def test_a_copy_of_an_image_with_burned_in_annotation_is_refused(tmp_path):
    """Its pixels may carry a name; a SEG or RTSTRUCT only references it (no pixels)."""
    files = series_files(tmp_path)
    source = pydicom.dcmread(files[0])
    source.BurnedInAnnotation = "YES"
    source.save_as(files[0], enforce_file_format=True)
    with pytest.raises(DicomSeriesError, match="BurnedInAnnotation is YES"):
        write_deidentified_series(files, Deidentifier("sub-1", KEY), tmp_path / "copy")
    assert not (tmp_path / "copy").exists()
    assert Deidentifier("sub-1", KEY).dataset(source).BurnedInAnnotation == "YES"


@pytest.mark.parametrize(
    "modality, multi_frame", [("MR", False), ("MR", True), ("CT", False), ("CT", True)]
)
def test_deidentified_copies_are_valid_and_convert_like_their_source(
    tmp_path, modality, multi_frame
):
    files = series_files(tmp_path, multi_frame, modality)
    for path in files:  # a source without Study ID (Type 2), as some exports are
        ds = pydicom.dcmread(path)
        del ds.StudyID
        ds.save_as(path, enforce_file_format=True)
    options = DeidentificationOptions(True, True, ("SAG_3D_DESS",))
    copies = write_deidentified_series(
        files, Deidentifier("sub-1", KEY, options), tmp_path / "copy"
    )
    original = read_series(select_series(find_series(files[0].parent)[0], None), 0.1)
    copied = read_series(select_series(find_series(tmp_path / "copy")[0], None), 0.1)
    np.testing.assert_array_equal(copied.data, original.data)
    assert np.abs(copied.affine - original.affine).max() < 1e-9
    raw = b"".join(p.read_bytes() for p in (tmp_path / "copy").iterdir())
    for keyword in ("PatientName", "PatientID", "AccessionNumber", "InstitutionName"):
        assert DEMO_PHI[keyword].encode() not in raw
    # copies of an earlier, longer series do not linger
    stale = tmp_path / "copy" / "IM0999.dcm"
    stale.write_bytes(b"old")
    write_deidentified_series(files, Deidentifier("sub-1", KEY), tmp_path / "copy")
    assert not stale.exists()
    assert dciodvfy_errors(copies) == []  # last: without the tool the test skips here


def test_seg_identity_source_is_a_config_error_in_pseudonymised_runs(monkeypatch):
    with pytest.raises(CohortsegError, match="pseudonymised run"):
        check_seg_identity("source", True)
    with pytest.raises(CohortsegError, match="must be one of"):
        check_seg_identity("patient", False)
    check_seg_identity("source", False)
    monkeypatch.setenv("TEST_KEY", "k")
    privacy = {"pseudonymize": True, "key_env": "TEST_KEY", "key_file": None}
    section = {
        "retain_longitudinal_dates": True,
        "retain_patient_characteristics": False,
        "safe_descriptors": [],
    }
    identity = run_identities("pseudonym", section, privacy)("sub-9")
    assert identity == Identity("sub-9", "pseudonym", b"k", DeidentificationOptions(True))
    assert identity.replaces_uids
    assert not Identity("sub-9").replaces_uids and Identity("sub-9", "source").deidentifier is None
    with pytest.raises(CohortsegError, match="pseudonymised run"):
        run_identities("source", section, privacy)
