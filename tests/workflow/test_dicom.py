"""A cohort stored as DICOM, end to end in one pseudonymised run: series folders (one file per
slice, one multi-frame object, a folder of two series with the sheet selecting one, a DICOM SEG
label, a series with a missing slice) become segmentations, DICOM SEG objects voxel for voxel
equal to them, and one line in the QC table for the broken series; no patient attribute,
institution, date, source UID or input path reaches any byte under results/ or logs/."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest

from cohortseg.core.io import load_nifti, read_tsv
from cohortseg.dicom.seg import seg_label_on_grid, write_dicom_seg
from cohortseg.dicom.series import find_series, read_series, select_series
from cohortseg.dicom.writers import along_normal, write_series
from cohortseg.inputs.demo import demo_phantom
from tests.workflow.conftest import job_counts, snakemake
from tests.workflow.test_privacy import leaks

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
}
FOLDER = "RoeRichard_MRN5550123"  # identifying input paths, as some exports name folders
SPLITS = ["train"] * 4 + ["val", "test", "test", "infer"]


def dicom_cohort(root):
    """The sheet and the source series' StudyInstanceUIDs."""
    rows, studies = ["subject\timage\tlabel\tsplit\tseries"], []
    for k, split in enumerate(SPLITS):
        sid = f"{FOLDER}-{k}"
        image, label, affine = demo_phantom([32, 32, 24], [2.5, 2.5, 3.5], seed=k)
        affine, (image, label) = along_normal(affine, image, label)
        folder = root / sid / "dicom"
        study = pydicom.uid.generate_uid()
        studies.append(study)
        multi = k == 5
        paths = write_series(
            folder, image, affine, phi=PHI, seed=k, multi_frame=multi, study_uid=study
        )
        series = ""
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
            import nibabel as nib

            nib.save(nib.Nifti1Image(label, affine), str(lab))
            label_cell = str(lab)
        if k == 1:  # a label given as a DICOM SEG of its series
            src = select_series(find_series(folder)[0], None)
            seg = root / sid / "label_seg.dcm"
            write_dicom_seg(
                seg, label, read_series(src, 0.1).affine, src, "x", CLASSES, colours=[(1, 0, 0)] * 3
            )
            label_cell = str(seg)
        rows.append(f"{sid}\t{folder}\t{label_cell}\t{split}\t{series}")
    sheet = root / "samples.tsv"
    sheet.write_text("\n".join(rows) + "\n")
    return sheet, studies


def test_dicom_cohort_end_to_end_pseudonymised(pseudonymised_run_of_both):
    """The DICOM subjects of the shared run (tests/workflow/conftest.py), whose NIfTI subjects
    test_privacy checks."""
    work, studies = pseudonymised_run_of_both["work"], pseudonymised_run_of_both["studies"]
    pseudonyms = {
        p["subject"]: p["pseudonym"]
        for p in read_tsv(pseudonymised_run_of_both["mapping"])
        if p["subject"].startswith(FOLDER)
    }
    results = work / "results"
    # the broken series: one line in the QC table, its path not shown; the others segmented
    (problem,) = read_tsv(results / "qc" / "invalid_subjects.tsv")
    assert problem["kind"] == "image" and problem["file"] == "<image>"
    assert "missing slice(s): 1 gap" in problem["problem"]
    assert problem["subject"] == pseudonyms[f"{FOLDER}-7"]
    segmentations = sorted(
        p
        for p in (results / "segmentations").iterdir()
        if p.name.removesuffix(".nii.gz") in set(pseudonyms.values())
    )
    assert len(segmentations) == 7
    metrics = [r for r in read_tsv(results / "metrics.tsv") if r["subject"] in pseudonyms.values()]
    assert len(metrics) == 7
    # every DICOM subject's segmentation also as a DICOM SEG, voxel for voxel (and none for
    # the NIfTI subjects, which have no series to refer to)
    segs = sorted(p for p in (results / "dicom_seg").iterdir() if p.suffix == ".dcm")
    assert [p.stem for p in segs] == [p.name.removesuffix(".nii.gz") for p in segmentations]
    for seg, nifti in zip(segs, segmentations, strict=True):
        labels, affine = load_nifti(nifti, dtype=np.uint8)
        np.testing.assert_array_equal(seg_label_on_grid(seg, CLASSES, affine, labels.shape), labels)
        assert str(pydicom.dcmread(seg, stop_before_pixels=True).PatientID) == seg.stem
    # nothing identifying anywhere
    secrets = [*PHI.values(), "MRN5550123", "RoeRichard", *studies]
    assert leaks(results, secrets) == []
    assert leaks(work / "logs", secrets) == []


def test_dicom_demo_plans_conversion_and_seg_in_shards(tmp_path):
    """`--config demo="{format: dicom}"`: every stage as for NIfTI, plus one conversion job
    per shard (and one DICOM SEG job per inference shard with outputs.dicom_seg)."""
    proc = snakemake(
        tmp_path, "-n", "--config", "demo={format: dicom}", "outputs={dicom_seg: true}"
    )
    counts = job_counts(proc.stdout)
    assert counts["convert"] == counts["validate"] == counts["infer"] == counts["dicom_seg"] == 4
    assert counts["demo_subject"] == 16
