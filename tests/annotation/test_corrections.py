"""Corrections from review: found by subject, checked like any label, made labelled subjects."""

from __future__ import annotations

import nrrd
import numpy as np
import pytest

from cohortseg.annotation.corrections import (
    apply_corrections,
    corrected_label_path,
    correction_split,
    find_corrections,
    read_correction,
)
from cohortseg.annotation.slicer import write_seg_nrrd
from cohortseg.core.cohort import Subject
from cohortseg.core.errors import CohortsegError, InvalidInputError
from cohortseg.core.io import load_nifti, save_nifti

CLASSES = ["organ", "shell", "tube"]


def test_found_in_a_folder_and_in_a_datastore_final_labels(tmp_path):
    folder, store = tmp_path / "corrections", tmp_path / "datastore"
    (store / "labels" / "final").mkdir(parents=True)
    folder.mkdir()
    (folder / "sub-1.seg.nrrd").write_bytes(b"")
    (folder / "notes.txt").write_text("")
    (store / "sub-2.nii.gz").write_bytes(b"")  # a datastore's image, not a correction
    (store / "labels" / "final" / "sub-2.nii.gz").write_bytes(b"")
    found = find_corrections(folder, None, store, tmp_path / "nowhere")
    assert found == {
        "sub-1": str(folder / "sub-1.seg.nrrd"),
        "sub-2": str(store / "labels" / "final" / "sub-2.nii.gz"),
    }
    (folder / "sub-2.seg.nrrd").write_bytes(b"")
    with pytest.raises(CohortsegError, match="sub-2 has two corrections"):
        find_corrections(folder, store)


def test_corrected_subjects_join_training_or_keep_their_split():
    subjects = [
        Subject("a", "a.nii.gz", None, "infer"),
        Subject("b", "b.nii.gz", "b_label.nii.gz", "test"),
        Subject("c", "c.nii.gz", None, "infer"),
    ]
    out = apply_corrections(subjects, {"a": "x/a.seg.nrrd", "b": "x/b.nii.gz"}, "train")
    assert out[0] == Subject("a", "a.nii.gz", corrected_label_path("a"), "train")
    assert out[1] == Subject("b", "b.nii.gz", corrected_label_path("b"), "test")
    assert out[2] == subjects[2]
    with pytest.raises(CohortsegError, match="x/zz.nii.gz: no subject"):
        apply_corrections(subjects, {"zz": "x/zz.nii.gz"}, "train")
    shares = [correction_split(f"s{k}", "infer", 0.25) for k in range(400)]
    assert 60 < shares.count("val") < 140


def test_a_slicer_correction_is_read_on_the_image_grid(tmp_path, phantom_files):
    sid, image, label = phantom_files[0]
    truth, affine = load_nifti(label, dtype=np.uint8)
    path = tmp_path / f"{sid}.seg.nrrd"
    write_seg_nrrd(path, truth, affine, CLASSES)
    labels, back = read_correction(sid, str(path), image, CLASSES)
    np.testing.assert_array_equal(labels, truth)
    np.testing.assert_allclose(back, load_nifti(image)[1])


def test_a_slicer_correction_cropped_to_its_segments_is_padded_back(tmp_path, phantom_files):
    """Slicer saves a segmentation cropped to its extent, its origin moved by whole voxels."""
    sid, image, label = phantom_files[0]
    truth, affine = load_nifti(label, dtype=np.uint8)
    nz = np.argwhere(truth)
    lo, hi = nz.min(axis=0), nz.max(axis=0) + 1
    box = tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))
    cropped_affine = affine.copy()
    cropped_affine[:3, 3] = (affine @ np.append(lo, 1.0))[:3]
    path = tmp_path / f"{sid}.seg.nrrd"
    write_seg_nrrd(path, truth[box], cropped_affine, CLASSES)
    assert nrrd.read_header(str(path))["sizes"].tolist() != list(truth.shape)
    labels, _ = read_correction(sid, str(path), image, CLASSES)
    np.testing.assert_array_equal(labels, truth)
    # a crop moved by half a voxel, or one reaching outside the image, is refused
    half = cropped_affine.copy()
    half[:3, 3] += affine[:3, 0] * 0.5 + affine[:3, 1] * 0.5 + affine[:3, 2] * 0.5
    write_seg_nrrd(path, truth[box], half, CLASSES)
    with pytest.raises(InvalidInputError, match=f"{sid}: .*cropped segmentation: .* mm off"):
        read_correction(sid, str(path), image, CLASSES, tolerance_mm=0.5)
    outside = cropped_affine.copy()
    outside[:3, 3] = (affine @ np.array([-2.0, 0.0, 0.0, 1.0]))[:3]
    write_seg_nrrd(path, truth[box], outside, CLASSES)
    with pytest.raises(InvalidInputError, match="reaches outside the image"):
        read_correction(sid, str(path), image, CLASSES)


def test_a_correction_off_the_grid_or_with_unknown_classes_is_refused(tmp_path, phantom_files):
    sid, image, label = phantom_files[0]
    truth, affine = load_nifti(label, dtype=np.uint8)
    shifted = affine.copy()
    shifted[:3, 3] += 3.0
    path = tmp_path / f"{sid}.seg.nrrd"
    write_seg_nrrd(path, truth, shifted, CLASSES)
    with pytest.raises(InvalidInputError, match=f"{sid}: .*affine differs from image by 5.2 mm"):
        read_correction(sid, str(path), image, CLASSES)
    write_seg_nrrd(path, truth, affine, CLASSES)
    data, header = nrrd.read(str(path))
    header["Segment2_Name"] = "vessel"
    nrrd.write(str(path), data, header)
    with pytest.raises(InvalidInputError, match="segment 'vessel' is not a class"):
        read_correction(sid, str(path), image, CLASSES)
    nifti = tmp_path / f"{sid}.nii.gz"
    save_nifti(nifti, np.where(truth == 3, 7, truth), affine, dtype=np.uint8)
    with pytest.raises(InvalidInputError, match=r"label values \[7\] outside 0..3"):
        read_correction(sid, str(nifti), image, CLASSES)
