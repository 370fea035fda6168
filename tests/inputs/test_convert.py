"""Conversion of a subject's DICOM inputs: one row each, a problem recorded (not raised) for a
SEG label whose segments overlap or, in pseudonymised runs, a series with burned-in
annotation; one echo of a multi-echo series; no series description in a pseudonymised run's
log."""

from __future__ import annotations

import logging

import nibabel as nib
import numpy as np
import pydicom

from cohortseg.core.cohort import Subject
from cohortseg.core.redact import REDACT_ENV
from cohortseg.dicom.series import find_series, read_series, select_series
from cohortseg.dicom.writers import along_normal, write_series
from cohortseg.inputs.convert import COLUMNS, convert_subject
from cohortseg.inputs.demo import demo_phantom
from tests.dicom.test_seg import CLASSES, write_overlapping_seg
from tests.dicom.test_series import multi_echo


def dicom_subject(tmp_path, description="SAG_3D_DESS Roe^Richard", **attributes):
    image, label, affine = demo_phantom([20, 18, 8], [1.7, 1.9, 2.4], 3)
    affine, (image, label) = along_normal(affine, image, label)
    paths = write_series(tmp_path / "dicom", image, affine, description=description, seed=3)
    for path in paths:
        ds = pydicom.dcmread(path)
        for keyword, value in attributes.items():
            setattr(ds, keyword, value)
        ds.save_as(path, enforce_file_format=True)
    source = Subject("s1", str(tmp_path / "dicom"), None, "train")
    target = Subject(
        "s1", str(tmp_path / "out" / "image.nii.gz"), str(tmp_path / "out" / "label.nii.gz"), ""
    )
    return source, target, image, label


def test_a_seg_label_with_overlapping_segments_is_one_problem_not_a_failed_shard(tmp_path):
    source, target, _, label = dicom_subject(tmp_path)
    series = select_series(find_series(source.image)[0], None)
    seg = tmp_path / "label_seg.dcm"
    write_overlapping_seg(seg, series, label, read_series(series, 0.1).affine)
    source = Subject(source.subject, source.image, str(seg), source.split)
    row = convert_subject(source, target, CLASSES, None, 0.1)
    assert set(row) <= set(COLUMNS)
    assert row["kind"] == "label" and row["image_sha256"]  # the image itself converted
    assert row["problem"].startswith("overlapping segments (1 'organ' and 2 'shell' in ")


def test_burned_in_annotation_is_refused_in_pseudonymised_runs_only(tmp_path):
    source, target, image, _ = dicom_subject(tmp_path, BurnedInAnnotation="YES")
    row = convert_subject(source, target, CLASSES, None, 0.1, refuse_burned_in=True)
    assert row["kind"] == "image" and "BurnedInAnnotation is YES" in row["problem"]
    row = convert_subject(source, target, CLASSES, None, 0.1)
    assert not row.get("problem") and nib.load(target.image).shape == image.shape


def test_one_echo_is_converted_where_dicom_echo_selects_it(tmp_path):
    image = multi_echo(tmp_path / "dicom")
    source = Subject("s1", str(tmp_path / "dicom"), None, "train")
    target = Subject("s1", str(tmp_path / "image.nii.gz"), None, "")
    row = convert_subject(source, target, CLASSES, None, 0.1)
    assert "2 echoes in one series" in row["problem"]
    row = convert_subject(source, target, CLASSES, None, 0.1, echo=2)
    assert not row.get("problem")
    np.testing.assert_array_equal(nib.load(target.image).get_fdata(), image * 2)


def test_a_pseudonymised_runs_log_names_no_series_description(tmp_path, caplog, monkeypatch):
    source, target, _, _ = dicom_subject(tmp_path)
    monkeypatch.setenv(REDACT_ENV, "1")
    with caplog.at_level(logging.INFO, logger="cohortseg"):
        convert_subject(source, target, CLASSES, None, 0.1)
    assert "series 3 (MR, 8 file(s)) -> 20x18x8 voxels" in caplog.text
    assert "Roe" not in caplog.text and "DESS" not in caplog.text
