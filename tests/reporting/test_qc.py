"""Quality-control montages: which subjects are picked and why, the montage's orientation
whatever the voxel order on disk, the images of the run's cohort and the PNG files."""

from __future__ import annotations

import nibabel.orientations as nio
import numpy as np
import pytest

from cohortseg.core.errors import CohortsegError
from cohortseg.core.io import save_nifti
from cohortseg.reporting.qc import select_qc_subjects, write_qc_montages
from cohortseg.viz.montage import montage_slices, qc_montage
from tests.conftest import REPORT_CLASSES, report_cohort

CLASSES = REPORT_CLASSES
PNG = b"\x89PNG"
cohort = report_cohort


def test_qc_selection_has_the_worst_dice_the_unusual_volumes_and_a_stable_sample():
    stats, metrics = cohort(unusual={"sub-004": 400.0})
    metrics[10]["dice_organ"] = 0.1
    stats[12]["status"] = "failed"
    metrics[12]["dice_organ"] = 0.0  # failed segmentations cannot be shown
    picked = select_qc_subjects(stats, metrics, CLASSES, qc_sample=3, qc_worst=2, qc_unusual=1)
    subjects = [p["subject"] for p in picked]
    assert subjects[0] == "sub-010" and "low Dice" in picked[0]["why"]
    assert subjects[2] == "sub-004" and picked[2]["why"].startswith("unusual organ volume (z=+")
    assert len(subjects) == 6 == len(set(subjects)) and "sub-012" not in subjects
    assert [p["why"] for p in picked[3:]] == ["random sample"] * 3
    again = select_qc_subjects(stats, metrics, CLASSES, qc_sample=3, qc_worst=2, qc_unusual=1)
    assert again == picked
    # more subjects: the earlier sample stays unless a new subject ranks before it
    bigger_stats, bigger_metrics = cohort(n=21, unusual={"sub-004": 400.0})
    bigger_metrics[10]["dice_organ"] = 0.1
    bigger = select_qc_subjects(bigger_stats, bigger_metrics, CLASSES, 3, 2, 1)
    sample = {p["subject"] for p in picked[3:]}
    assert len(sample & {p["subject"] for p in bigger[3:]}) >= 2


def test_qc_selection_with_a_seed_draws_another_sample():
    stats, metrics = cohort(n=40)
    a = select_qc_subjects(stats, metrics, CLASSES, 5, 0, 0, seed=0)
    b = select_qc_subjects(stats, metrics, CLASSES, 5, 0, 0, seed=1)
    assert a != b and len(a) == len(b) == 5


def marked_volume():
    """A RAS volume (1 mm) with the label in the patient's right-anterior-superior octant."""
    image = np.zeros((20, 24, 16), np.float32)
    labels = np.zeros(image.shape, np.uint8)
    labels[12:18, 14:22, 9:14] = 1  # x > centre: Right, y: Anterior, z: Superior
    image[labels > 0] = 100
    return image, labels, np.eye(4)


def test_montage_shows_right_on_the_left_and_anterior_superior_up():
    image, labels, affine = marked_volume()
    axial, coronal, sagittal = montage_slices(image, labels, affine)
    rows, cols = np.nonzero(axial["labels"])  # row 0 at the bottom
    assert cols.max() < axial["labels"].shape[1] / 2  # patient's right on the viewer's left
    assert rows.min() > axial["labels"].shape[0] / 2  # anterior up
    rows, cols = np.nonzero(coronal["labels"])
    assert (
        cols.max() < coronal["labels"].shape[1] / 2 and rows.min() > coronal["labels"].shape[0] / 2
    )
    rows, cols = np.nonzero(sagittal["labels"])
    assert cols.max() < sagittal["labels"].shape[1] / 2  # anterior on the left
    assert rows.min() > sagittal["labels"].shape[0] / 2  # superior up
    assert axial["extent_mm"] == (20.0, 24.0) and sagittal["sides"] == ("A", "P", "I", "S")


@pytest.mark.parametrize("axcodes", [("L", "P", "S"), ("S", "R", "P"), ("A", "I", "L")])
def test_montage_is_the_same_whatever_the_voxel_order_on_disk(axcodes):
    image, labels, affine = marked_volume()
    ornt = nio.ornt_transform(nio.axcodes2ornt(("R", "A", "S")), nio.axcodes2ornt(axcodes))
    stored_image = nio.apply_orientation(image, ornt)
    stored_labels = nio.apply_orientation(labels, ornt)
    stored_affine = affine @ nio.inv_ornt_aff(ornt, image.shape)
    assert nio.aff2axcodes(stored_affine) == axcodes
    for want, got in zip(
        montage_slices(image, labels, affine),
        montage_slices(stored_image, stored_labels, stored_affine),
        strict=True,
    ):
        np.testing.assert_array_equal(got["labels"], want["labels"])
        np.testing.assert_array_equal(got["image"], want["image"])


def test_qc_montage_png(tmp_path):
    image, labels, affine = marked_volume()
    qc_montage(image, labels, affine, CLASSES, "sub-001 (test): random sample", tmp_path / "m.png")
    assert (tmp_path / "m.png").read_bytes()[:4] == PNG


def test_write_qc_montages_reads_images_from_the_cohort(tmp_path):
    image, labels, affine = marked_volume()
    save_nifti(tmp_path / "img.nii.gz", image, affine)
    save_nifti(tmp_path / "seg.nii.gz", labels, affine)
    stats = [{"subject": "s1", "image": "<image>", "segmentation": str(tmp_path / "seg.nii.gz")}]
    selection = [{"subject": "s1", "split": "test", "why": "random sample"}]
    images = {"s1": str(tmp_path / "img.nii.gz")}
    written = write_qc_montages(selection, stats, images, CLASSES, tmp_path / "qc")
    assert written == [tmp_path / "qc" / "s1.png"] and written[0].read_bytes()[:4] == PNG
    save_nifti(tmp_path / "seg.nii.gz", labels, affine @ np.diag([2.0, 1.0, 1.0, 1.0]))
    with pytest.raises(CohortsegError, match="not on the grid"):
        write_qc_montages(selection, stats, images, CLASSES, tmp_path / "qc")


def test_a_2d_montage_is_one_view_of_the_slice(tmp_path):
    image, labels, affine = marked_volume()
    k = 11  # through the label
    slice_image, slice_labels = image[:, :, k : k + 1], labels[:, :, k : k + 1]

    views = montage_slices(slice_image, slice_labels, affine, single_view=True)

    assert [v["name"] for v in views] == ["slice"]
    axial = montage_slices(image, labels, affine)[0]
    assert views[0]["extent_mm"] == axial["extent_mm"] and views[0]["sides"] == axial["sides"]
    assert len(montage_slices(image, labels, affine, single_view=True)) == 3  # volumes: 3
    qc_montage(slice_image, slice_labels, affine, CLASSES, "sub-2d", tmp_path / "m.png")
    assert (tmp_path / "m.png").read_bytes()[:4] == PNG
