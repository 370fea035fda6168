"""Per-subject statistics: volumes, surfaces, components, world boxes, robust outliers."""

from __future__ import annotations

import math

import numpy as np
import pytest

from cohortseg.core.io import save_nifti
from cohortseg.evaluation.stats import (
    class_statistics,
    flag_outliers,
    robust_z,
    stats_columns,
    subject_statistics,
    summarise_stats,
)
from cohortseg.inputs.demo import demo_affine
from tests.core.test_geometry import brute_force_box

CLASSES = ["organ", "shell"]


def ball(shape, centre, radius_vox):
    idx = np.indices(shape).transpose(1, 2, 3, 0)
    return ((idx - np.asarray(centre)) ** 2).sum(axis=-1) <= radius_vox**2


def oblique_affine(seed: int, shape=(30, 28, 24), spacing=(1.0, 1.2, 1.5)) -> np.ndarray:
    return demo_affine(np.random.default_rng(seed), shape, spacing)


def test_volume_surface_components_and_box_of_two_balls():
    shape = (40, 30, 30)
    labels = np.zeros(shape, np.uint8)
    labels[ball(shape, (10, 15, 15), 6)] = 1
    labels[ball(shape, (28, 15, 15), 6)] = 1
    affine = oblique_affine(5, shape, (1.0, 1.0, 1.0))
    spacing = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
    stats = class_statistics(labels, affine, 1)
    voxel_ml = abs(np.linalg.det(affine[:3, :3])) / 1000
    assert stats["volume_ml"] == pytest.approx((labels == 1).sum() * voxel_ml)
    assert stats["components"] == 2
    # two spheres of radius 6 voxels: the area of the smoothed surface within 5 %
    radius_mm = 6 * float(np.cbrt(np.prod(spacing)))
    assert stats["surface_mm2"] == pytest.approx(2 * 4 * math.pi * radius_mm**2, rel=0.05)
    lo, hi = brute_force_box(labels == 1, affine)
    for k, axis in enumerate("xyz"):
        assert stats[f"bbox_min_{axis}_mm"] == pytest.approx(lo[k])
        assert stats[f"bbox_max_{axis}_mm"] == pytest.approx(hi[k])


def test_components_count_corner_neighbours_as_connected():
    labels = np.zeros((5, 5, 5), np.uint8)
    labels[1, 1, 1] = labels[2, 2, 2] = 1  # touch at a corner only
    labels[4, 4, 0] = 1
    assert class_statistics(labels, np.eye(4), 1)["components"] == 2


def test_an_absent_class_has_zero_volume_and_no_box():
    stats = class_statistics(np.zeros((4, 4, 4), np.uint8), np.eye(4), 1)
    assert stats["volume_ml"] == 0 and stats["surface_mm2"] == 0 and stats["components"] == 0
    assert all(math.isnan(stats[f"bbox_{e}_{a}_mm"]) for e in ("min", "max") for a in "xyz")


def test_robust_z():
    z = robust_z([1.0, 2.0, 3.0, 4.0, 100.0, math.nan])
    # median 3, MAD 1 -> scale 1.4826
    np.testing.assert_allclose(z[:5], (np.array([1, 2, 3, 4, 100]) - 3) / 1.4826)
    assert math.isnan(z[5])
    # MAD = 0 (most values equal): falls back to the mean absolute deviation
    z = robust_z([5.0, 5.0, 5.0, 5.0, 9.0])
    assert z[-1] == pytest.approx(4 / (1.253314 * 0.8))
    np.testing.assert_array_equal(robust_z([2.0, 2.0, 2.0]), [0.0, 0.0, 0.0])


def cohort_rows(volumes):
    return [
        {
            "subject": f"s{k:02d}",
            "split": "test",
            "status": "ok",
            "volume_ml_organ": v,
            "volume_ml_shell": 10.0 + 0.1 * (k % 3),
        }
        for k, v in enumerate(volumes)
    ]


def test_outlying_volumes_and_failed_segmentations_are_flagged_for_review():
    rng = np.random.default_rng(0)
    rows = cohort_rows(list(100 + rng.normal(0, 5, 19)) + [300.0])
    rows.append({"subject": "s99", "split": "test", "status": "failed"})
    flagged = flag_outliers(rows, CLASSES, outlier_z=3.5)
    review = {r["subject"]: r["review"] for r in flagged if r["review"]}
    assert set(review) == {"s19", "s99"}
    assert review["s19"].startswith("organ volume z=+")
    assert review["s99"] == "failed segmentation"
    assert "volume_z_organ" not in flagged[-1]


def test_summary_counts_segmented_skipped_and_failed_subjects():
    rows = cohort_rows([100.0, 110.0, 90.0])
    rows[1]["status"] = "empty"
    rows.append({"subject": "s99", "split": "test", "status": "failed"})
    rows = flag_outliers(rows, CLASSES, 3.5)
    summary = summarise_stats(rows, CLASSES, 3.5, cohort_size=7, skipped={"not selected": 3})
    assert summary["progress"] == {
        "subjects": 7,
        "segmented": 3,
        "empty": 1,
        "failed": 1,
        "skipped": 3,
        "skipped_by_reason": {"not selected": 3},
    }
    organ = summary["columns"]["volume_ml_organ"]
    assert organ["n"] == 3 and organ["median"] == 100.0 and organ["min"] == 90.0
    assert [r["subject"] for r in summary["review"]] == ["s01", "s99"]


def test_subject_statistics_from_files(tmp_path):
    labels = np.zeros((12, 12, 12), np.uint8)
    labels[2:6, 2:6, 2:6] = 1
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    save_nifti(tmp_path / "seg.nii.gz", labels, affine)
    save_nifti(tmp_path / "empty.nii.gz", np.zeros_like(labels), affine)
    row = subject_statistics("a", "test", tmp_path / "seg.nii.gz", "img.nii.gz", CLASSES)
    assert row["status"] == "ok"
    assert row["volume_ml_organ"] == pytest.approx(64 * 8 / 1000)
    assert row["volume_ml_shell"] == 0 and row["components_organ"] == 1
    assert (row["bbox_min_x_mm_organ"], row["bbox_max_x_mm_organ"]) == (3.0, 11.0)
    assert set(row) <= set(stats_columns(CLASSES))
    empty = subject_statistics("b", "test", tmp_path / "empty.nii.gz", "img.nii.gz", CLASSES)
    assert empty["status"] == "empty"
    failed = subject_statistics("c", "infer", tmp_path / "missing.nii.gz", "img.nii.gz", CLASSES)
    assert failed["status"] == "failed" and "does not exist" in failed["problem"]


def test_pseudonymised_runs_keep_input_paths_out_of_the_table(tmp_path, monkeypatch):
    save_nifti(tmp_path / "seg.nii.gz", np.ones((3, 3, 3), np.uint8), np.eye(4))
    monkeypatch.setenv("COHORTSEG_REDACT_PATHS", "1")
    row = subject_statistics("a", "test", tmp_path / "seg.nii.gz", "/data/jane-doe.nii", CLASSES)
    assert row["image"] == "<image>" and "jane" not in str(row)


def test_unusually_high_uncertainty_flags_a_subject_but_unusually_low_does_not():
    rows = cohort_rows([100.0 + k for k in range(20)])
    for k, r in enumerate(rows):
        r["uncertainty_organ"] = 0.10 + 0.001 * (k % 5)
    rows[3]["uncertainty_organ"] = 0.30  # degraded image: the network hesitates
    rows[4]["uncertainty_organ"] = 0.0  # certain: nothing to review
    flagged = flag_outliers(rows, CLASSES, outlier_z=3.5)
    review = {r["subject"]: r["review"] for r in flagged if r["review"]}
    assert list(review) == [rows[3]["subject"]]
    assert review[rows[3]["subject"]].startswith("organ uncertainty z=+")
    assert flagged[4]["uncertainty_z_organ"] < -3.5
    assert math.isnan(flagged[0]["uncertainty_z_shell"])  # no score: no z, no flag
    summary = summarise_stats(flagged, CLASSES, 3.5, cohort_size=20, skipped={})
    assert summary["columns"]["uncertainty_organ"]["max"] == pytest.approx(0.30)


def test_statistics_of_a_2d_image_are_the_area_times_the_slice_thickness():
    from cohortseg.evaluation.stats import class_statistics

    labels = np.zeros((20, 20, 1), np.uint8)
    labels[5:15, 4:8, 0] = 1  # 40 pixels of 0.5 x 0.5 mm, 2 mm thick
    stats = class_statistics(labels, np.diag([0.5, 0.5, 2.0, 1.0]), 1)

    assert stats["volume_ml"] == pytest.approx(40 * 0.25 * 2.0 / 1000)
    assert stats["components"] == 1
    assert stats["bbox_max_z_mm"] - stats["bbox_min_z_mm"] == pytest.approx(2.0)
