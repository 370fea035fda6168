"""The review package: who is chosen and why, and files that Slicer and MONAI Label open."""

from __future__ import annotations

import numpy as np

from cohortseg.annotation.review import select_review_subjects, write_review_package
from cohortseg.annotation.slicer import read_seg_nrrd
from cohortseg.core.io import load_nifti, read_tsv

CLASSES = ["organ", "shell", "tube"]


def test_selection_names_every_reason():
    stats = [
        {"subject": "a", "split": "test", "review": ""},
        {"subject": "b", "split": "infer", "review": "empty segmentation"},
        {"subject": "c", "split": "test", "review": ""},
        {"subject": "d", "split": "infer", "review": ""},
    ]
    metrics = [
        {"subject": "a", "dice_organ": 0.9, "dice_shell": 0.9, "dice_tube": 0.9},
        {"subject": "c", "dice_organ": 0.5, "dice_shell": 0.9, "dice_tube": 0.9},
        {"subject": "d", "dice_organ": "", "dice_shell": "", "dice_tube": ""},
    ]
    chosen = select_review_subjects(stats, metrics, CLASSES, worst=1, subjects=["d", "zz"])
    assert [r["subject"] for r in chosen] == ["b", "c", "d"]
    why = {r["subject"]: r["why"] for r in chosen}
    assert why["b"] == "QC: empty segmentation"
    assert why["c"].startswith("low Dice (mean 0.767)")
    assert why["d"] == "listed in review.subjects"


def test_package_is_on_the_image_grid(tmp_path, phantom_files):
    sid, image, label = phantom_files[0]
    selection = [{"subject": sid, "split": "test", "why": "low Dice"}]
    rows = write_review_package(selection, {sid: image}, {sid: label}, CLASSES, tmp_path)
    assert (
        read_tsv(tmp_path / "review.tsv") == [{k: str(v) for k, v in rows[0].items()}]
        and rows[0]["why"] == "low Dice"
    )
    truth, affine = load_nifti(label, dtype=np.uint8)
    seg, seg_affine = read_seg_nrrd(tmp_path / "slicer" / f"{sid}.seg.nrrd", CLASSES)
    np.testing.assert_array_equal(seg, truth)
    np.testing.assert_allclose(seg_affine, affine, atol=1e-6)
    img, img_affine = load_nifti(tmp_path / "slicer" / f"{sid}.nii.gz")
    np.testing.assert_array_equal(img, load_nifti(image)[0])
    # MONAI Label's datastore: the image at the top, the prediction under labels/original
    store = tmp_path / "datastore"
    assert (store / f"{sid}.nii.gz").exists() and (store / "labels" / "final").is_dir()
    original, _ = load_nifti(store / "labels" / "original" / f"{sid}.nii.gz", dtype=np.uint8)
    np.testing.assert_array_equal(original, truth)
