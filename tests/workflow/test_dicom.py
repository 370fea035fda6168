"""A cohort stored as DICOM, end to end in one pseudonymised run: series folders (one file per
slice, one multi-frame object, a folder of two series with the sheet selecting one, a DICOM SEG
label, a series with a missing slice, one with burned-in annotation, a SEG label whose segments
overlap) become segmentations, DICOM SEG objects voxel for voxel equal to them and RT Structure
Sets that rasterise back to them, each beside the de-identified source series its references
resolve to, all valid for dciodvfy; one line in the QC table for each broken subject. Identifying
attributes, descriptions, private tags, file and folder names are planted in the inputs; that
none reaches results/ or logs/ is test_privacy's check over the same run."""

from __future__ import annotations

import datetime

import nibabel as nib
import numpy as np
import pydicom
import pytest

from cohortseg.core.io import load_nifti, read_tsv
from cohortseg.dicom.deidentify import date_shift_days
from cohortseg.dicom.identity import Identity
from cohortseg.dicom.seg import seg_label_on_grid, write_dicom_seg
from cohortseg.dicom.series import find_series, read_series, select_series
from cohortseg.dicom.writers import along_normal, write_series
from cohortseg.inputs.demo import demo_phantom
from tests.dicom.dicom_tools import dciodvfy_errors
from tests.dicom.test_rtstruct import rasterise
from tests.dicom.test_seg import write_overlapping_seg
from tests.workflow.conftest import job_counts, snakemake

pytestmark = pytest.mark.slow

CLASSES = ["organ", "shell", "tube"]
PHI = {
    "PatientName": "Roe^Richard",
    "PatientID": "MRN5550123",
    "PatientBirthDate": "19500101",
    "AccessionNumber": "ACC99881",
    "InstitutionName": "St Elsewhere Clinic",
    "ReferringPhysicianName": "House^Gregory",
    "StudyDate": "20210315",
    "SeriesDate": "20210315",
    "StudyDescription": "KNEE STUDYDESC-ROE-7732",
    "ProtocolName": "PROTOCOL-ROE-7733",
    "ImageComments": "COMMENT-ROE-7737",
}
SAFE = "SAG_3D_DESS"  # the one safe descriptor of the run
DESCRIPTION = f"{SAFE} SERIESDESC-ROE-7731"  # a description that is not safe
PRIVATE = "PRIVATE-ROE-7734"
FILE_NAME = "ROE-FILENAME-7735.dcm"
FOLDER_NAME = "ROE-FOLDER-7736"
FOLDER = "RoeRichard_MRN5550123"  # identifying input paths, as some exports name folders
SPLITS = ["train"] * 4 + ["val", "test", "test", "infer", "test", "train"]
#: dicom.deidentification of the shared run (YAML)
DEIDENTIFICATION = (
    "{retain_longitudinal_dates: true, retain_patient_characteristics: false,"
    f" safe_descriptors: [{SAFE}]}}"
)
KEY = b"test-key-not-secret"  # tests/workflow/test_privacy.py's pseudonymised_run


def plant_private_tags(paths):
    for path in paths:
        ds = pydicom.dcmread(path)
        ds.private_block(0x0029, "ACME 1.0", create=True).add_new(0x10, "LO", PRIVATE)
        ds.save_as(path, enforce_file_format=True)


def source_uids(folder) -> set[str]:
    """Every UID of the files under ``folder`` that is not one of the standard's own."""
    uids = set()
    for path in folder.rglob("*.dcm"):
        for elem in pydicom.dcmread(path, stop_before_pixels=True).iterall():
            if elem.VR == "UI" and not str(elem.value).startswith("1.2.840.10008."):
                uids.add(str(elem.value))
    return uids


def dicom_cohort(root):
    """The sheet and every identifying string of its DICOM inputs (their UIDs included).

    Subjects 0 and 2 carry the safe description, the others one that is not; subject 3 has a
    file with an identifying name, subject 4 its series in an identifying folder; subject 5 is
    one multi-frame object; subject 6's folder holds a second series; subject 7 lost a slice,
    subject 8 has burned-in annotation, subject 9's label is a SEG with overlapping segments."""
    rows, secrets = ["subject\timage\tlabel\tsplit\tseries"], set()
    for k, split in enumerate(SPLITS):
        sid = f"{FOLDER}-{k}"
        image, label, affine = demo_phantom([32, 32, 24], [2.5, 2.5, 3.5], seed=k)
        affine, (image, label) = along_normal(affine, image, label)
        folder = root / sid / "dicom"
        series_folder = folder / FOLDER_NAME if k == 4 else folder
        phi = {**PHI, "BurnedInAnnotation": "YES" if k == 8 else "NO"}
        paths = write_series(
            series_folder,
            image,
            affine,
            phi=phi,
            seed=k,
            multi_frame=k == 5,
            study_uid=pydicom.uid.generate_uid(),
            description=SAFE if k in (0, 2) else DESCRIPTION,
        )
        plant_private_tags(paths)
        series = ""
        if k == 3:  # a file named after the patient
            paths[0].rename(paths[0].with_name(FILE_NAME))
        if k == 6:  # a second series in the same folder: the sheet selects the first
            write_series(
                folder / "cor", image[:, ::-1], affine, phi=PHI, seed=99, description="COR_T1"
            )
            series = "DESS"
        if k == 7:  # a slice lost in transfer
            sorted(paths)[3].unlink()
        label_cell = ""
        if split != "infer":
            lab = root / sid / "label.nii.gz"
            nib.save(nib.Nifti1Image(label, affine), str(lab))
            label_cell = str(lab)
        if k in (1, 9):  # a label given as a DICOM SEG of its series (9: segments overlap)
            src = select_series(find_series(folder)[0], None)
            seg = root / sid / "label_seg.dcm"
            grid = read_series(src, 0.1).affine
            if k == 1:
                write_dicom_seg(
                    seg, label, grid, src, Identity("x"), CLASSES, colours=[(1, 0, 0)] * 3
                )
            else:
                write_overlapping_seg(seg, src, label, grid, CLASSES)
            label_cell = str(seg)
        rows.append(f"{sid}\t{folder}\t{label_cell}\t{split}\t{series}")
        secrets |= source_uids(folder)
    sheet = root / "samples.tsv"
    sheet.write_text("\n".join(rows) + "\n")
    secrets |= {*PHI.values(), "SERIESDESC-ROE-7731", PRIVATE, FILE_NAME, FOLDER_NAME, FOLDER}
    return sheet, sorted(secrets)


def shifted(day: str, pseudonym: str) -> str:
    date = datetime.date(int(day[:4]), int(day[4:6]), int(day[6:8]))
    return (date - datetime.timedelta(days=date_shift_days(pseudonym, KEY))).strftime("%Y%m%d")


def test_dicom_cohort_end_to_end_pseudonymised(pseudonymised_run_of_both):
    """The DICOM subjects of the shared run (tests/workflow/conftest.py), whose NIfTI subjects
    test_privacy checks."""
    work = pseudonymised_run_of_both["work"]
    pseudonyms = {
        p["subject"]: p["pseudonym"]
        for p in read_tsv(pseudonymised_run_of_both["mapping"])
        if p["subject"].startswith(FOLDER)
    }
    results = work / "results"
    # the broken subjects: one line each in the QC table, their paths not shown
    problems = {p["subject"]: p for p in read_tsv(results / "qc" / "invalid_subjects.tsv")}
    assert set(problems) == {pseudonyms[f"{FOLDER}-{k}"] for k in (7, 8, 9)}
    missing, burned, overlap = (problems[pseudonyms[f"{FOLDER}-{k}"]] for k in (7, 8, 9))
    assert missing["kind"] == "image" and missing["file"] == "<image>"
    assert "missing slice(s): 1 gap" in missing["problem"]
    assert burned["kind"] == "image" and "BurnedInAnnotation is YES" in burned["problem"]
    assert overlap["kind"] == "label" and overlap["file"] == "<label>"
    assert overlap["problem"].startswith("overlapping segments (1 'organ' and 2 'shell' in")
    segmented = [pseudonyms[f"{FOLDER}-{k}"] for k in range(7)]
    segmentations = [results / "segmentations" / f"{s}.nii.gz" for s in segmented]
    assert all(p.exists() for p in segmentations)
    metrics = [r for r in read_tsv(results / "metrics.tsv") if r["subject"] in segmented]
    assert len(metrics) == 7
    # every DICOM subject's segmentation as a SEG, voxel for voxel, and as an RTSTRUCT that
    # rasterises back; each beside the de-identified series its references resolve to (and
    # none for the NIfTI subjects, which have no series to refer to)
    segs = sorted(p.stem for p in (results / "dicom_seg").glob("*.dcm"))
    assert segs == sorted(segmented)
    assert sorted(p.stem for p in (results / "rtstruct").glob("*.dcm")) == sorted(segmented)
    checked = []
    for k, (subject, nifti) in enumerate(zip(segmented, segmentations, strict=True)):
        labels, affine = load_nifti(nifti, dtype=np.uint8)
        seg_file = results / "dicom_seg" / f"{subject}.dcm"
        np.testing.assert_array_equal(
            seg_label_on_grid(seg_file, CLASSES, affine, labels.shape), labels
        )
        copies = sorted((results / "dicom_seg" / subject / "source").glob("*.dcm"))
        seg = pydicom.dcmread(seg_file, stop_before_pixels=True)
        assert_resolves(seg, copies, subject)
        rt_file = results / "rtstruct" / f"{subject}.dcm"
        rt_copies = sorted((results / "rtstruct" / subject / "source").glob("*.dcm"))
        masks = rasterise(rt_file, rt_copies)
        for value, name in enumerate(CLASSES, start=1):
            truth = labels == value
            both = int(masks[name].sum() + truth.sum())
            assert 2 * int(np.sum(masks[name] & truth)) >= 0.95 * both, (subject, name)
        copy = pydicom.dcmread(copies[0], stop_before_pixels=True)
        assert_deidentified(copy, subject, safe=k in (0, 2))
        assert_deidentified(pydicom.dcmread(rt_file), subject, safe=False)
        checked += [seg_file, rt_file, copies[0], rt_copies[-1]]
    checked += copies  # one multi-file series whole (subject 6's)
    assert dciodvfy_errors(checked) == []


def assert_resolves(seg, copies, subject):
    """A SEG's references resolve to the de-identified copies written beside it."""
    headers = [pydicom.dcmread(c, stop_before_pixels=True) for c in copies]
    referenced = seg.ReferencedSeriesSequence[0]
    assert referenced.SeriesInstanceUID == headers[0].SeriesInstanceUID
    assert {i.ReferencedSOPInstanceUID for i in referenced.ReferencedInstanceSequence} <= {
        h.SOPInstanceUID for h in headers
    }
    assert seg.StudyInstanceUID == headers[0].StudyInstanceUID
    assert seg.FrameOfReferenceUID == headers[0].FrameOfReferenceUID
    assert seg.PatientID == headers[0].PatientID == subject


def assert_deidentified(ds, subject, safe):
    assert ds.PatientIdentityRemoved == "YES" and ds.PatientID == subject
    codes = [c.CodeValue for c in ds.DeidentificationMethodCodeSequence]
    assert codes == ["113100", "113105", "113107"]
    assert ds.StudyDate == shifted(PHI["StudyDate"], subject)  # longitudinal, shifted
    if "ImagePositionPatient" in ds or "PerFrameFunctionalGroupsSequence" in ds:
        assert ds.get("SeriesDescription") == (SAFE if safe else None)
        assert not any(e.tag.is_private for e in ds)


def test_dicom_demo_plans_conversion_seg_and_rtstruct_in_shards(tmp_path):
    """`--config demo="{format: dicom}"`: every stage as for NIfTI, plus one conversion job
    per shard (and one DICOM SEG and one RTSTRUCT job per inference shard with
    outputs.dicom_seg and outputs.rtstruct)."""
    proc = snakemake(
        tmp_path,
        "-n",
        "--config",
        "demo={format: dicom}",
        "outputs={dicom_seg: true, rtstruct: true}",
    )
    counts = job_counts(proc.stdout)
    assert counts["convert"] == counts["validate"] == counts["infer"] == 4
    assert counts["dicom_seg"] == counts["rtstruct"] == 4
    assert counts["demo_subject"] == 16


def test_seg_identity_source_is_refused_in_a_pseudonymised_run(tmp_path, monkeypatch):
    monkeypatch.setenv("COHORTSEG_PSEUDONYM_KEY", "k")
    proc = snakemake(
        tmp_path,
        "-n",
        "--config",
        "privacy={pseudonymize: true}",
        "dicom={seg_identity: source}",
        check=False,
    )
    assert proc.returncode != 0
    assert "dicom.seg_identity: source copies the source's patient" in proc.stderr + proc.stdout
