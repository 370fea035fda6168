"""Tests for cohortseg.evaluation.metrics: Dice, HD95 in mm, class volumes in mL and the cohort
summary."""

from __future__ import annotations

import math

import numpy as np
import pytest

from cohortseg.core.errors import InvalidInputError
from cohortseg.core.io import save_nifti
from cohortseg.evaluation.metrics import (
    class_volumes_ml,
    dice_hd95,
    evaluate_subject,
    metric_columns,
    summarise,
)

# MONAI warns about the empty classes these tests create on purpose
pytestmark = pytest.mark.filterwarnings("ignore:the (prediction|ground truth) of class")


def rotation(degrees: float, axis=(1.0, 2.0, 2.0)) -> np.ndarray:
    axis = np.asarray(axis) / np.linalg.norm(axis)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    angle = np.deg2rad(degrees)
    return np.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * (k @ k)


def affine_with_spacing(spacing_mm, degrees: float = 0.0) -> np.ndarray:
    affine = np.eye(4)
    affine[:3, :3] = rotation(degrees) @ np.diag(spacing_mm)
    affine[:3, 3] = [-20.0, 13.0, 4.0]
    return affine


def cube(shape, start, stop, value=1) -> np.ndarray:
    labels = np.zeros(shape, np.uint8)
    labels[tuple(slice(a, b) for a, b in zip(start, stop, strict=True))] = value
    return labels


# --------------------------------------------------------------------------------------------
# dice_hd95


def test_identical_maps_give_dice_one_and_hd95_zero():
    labels = cube((16, 16, 16), (2, 3, 4), (9, 10, 8), 1)
    labels[10:14, 10:14, 10:14] = 2

    dice, hd95 = dice_hd95(labels, labels.copy(), affine_with_spacing((1.0, 1.2, 3.0)), 3)

    assert dice == pytest.approx([1.0, 1.0])
    assert hd95 == pytest.approx([0.0, 0.0])


@pytest.mark.parametrize(
    "pred_start, pred_stop, expected",
    [
        ((4, 2, 2), (8, 6, 6), 2 * 32 / (64 + 64)),  # half of the cube overlaps
        ((2, 2, 2), (6, 6, 4), 2 * 32 / (64 + 32)),  # half the cube, inside it
        ((2, 2, 2), (7, 6, 6), 2 * 64 / (64 + 80)),  # one slab too many
        ((8, 8, 8), (10, 10, 10), 0.0),  # disjoint
    ],
)
def test_dice_of_two_cubes(pred_start, pred_stop, expected):
    reference = cube((12, 12, 12), (2, 2, 2), (6, 6, 6))  # 64 voxels
    prediction = cube((12, 12, 12), pred_start, pred_stop)

    (dice,), _ = dice_hd95(prediction, reference, np.eye(4), 2)

    assert dice == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize("degrees", [0.0, 30.0])
@pytest.mark.parametrize("axis, expected_mm", [(0, 0.8), (1, 1.0), (2, 3.0)])
def test_hd95_is_in_mm_along_anisotropic_axes(axis, expected_mm, degrees):
    reference = cube((20, 20, 20), (6, 6, 6), (13, 13, 13))
    prediction = np.roll(reference, 1, axis=axis)  # one voxel along one axis

    _, (hd95,) = dice_hd95(prediction, reference, affine_with_spacing((0.8, 1.0, 3.0), degrees), 2)

    assert hd95 == pytest.approx(expected_mm, abs=0.05)


def test_class_absent_from_both_maps_scores_perfectly():
    labels = cube((10, 10, 10), (2, 2, 2), (5, 5, 5), 1)

    dice, hd95 = dice_hd95(labels, labels.copy(), np.eye(4), 4)

    assert dice == [1.0, 1.0, 1.0]
    assert hd95 == [0.0, 0.0, 0.0]


@pytest.mark.parametrize("missing_from", ["prediction", "reference"])
def test_class_absent_from_one_map_scores_zero_and_nan(missing_from):
    with_class = cube((10, 10, 10), (2, 2, 2), (5, 5, 5), 1)
    with_class[6:8, 6:8, 6:8] = 2
    without_class = cube((10, 10, 10), (2, 2, 2), (5, 5, 5), 1)
    pred, ref = (
        (without_class, with_class) if missing_from == "prediction" else (with_class, without_class)
    )

    dice, hd95 = dice_hd95(pred, ref, np.eye(4), 3)

    assert dice == [1.0, 0.0]
    assert hd95[0] == 0.0
    assert math.isnan(hd95[1])


# --------------------------------------------------------------------------------------------
# class_volumes_ml


@pytest.mark.parametrize("flip", [1.0, -1.0])
def test_class_volumes_use_the_voxel_volume_of_the_affine(flip):
    labels = cube((20, 20, 20), (0, 0, 0), (5, 5, 5), 1)  # 125 voxels
    labels[10:20, 10:15, 10:15] = 2  # 250 voxels
    affine = affine_with_spacing((2.0 * flip, 2.0, 2.0), degrees=35.0)  # 8 mm3 voxels

    volumes = class_volumes_ml(labels, affine, 4)

    assert volumes == pytest.approx([1.0, 2.0, 0.0])


def test_class_volumes_of_anisotropic_voxels():
    labels = cube((10, 10, 10), (0, 0, 0), (10, 10, 4), 1)  # 400 voxels of 2.5 mm3

    assert class_volumes_ml(labels, np.diag([0.5, 1.0, 5.0, 1.0]), 2) == pytest.approx([1.0])


# --------------------------------------------------------------------------------------------
# summarise

CLASSES = ["organ", "tube"]


def row(subject, split, dice=None, hd95=None, volume=("1.5", "0.25")):
    """A row as read back from the metrics TSV: strings, empty where not computed."""
    r = {"subject": subject, "split": split}
    for prefix, values in (("dice", dice), ("hd95_mm", hd95), ("volume_ml", volume)):
        for c, v in zip(CLASSES, values or ("", ""), strict=True):
            r[f"{prefix}_{c}"] = v
    return r


ROWS = [
    row("s1", "train", dice=("0.9", "0.7"), hd95=("2.0", "nan")),
    row("s2", "train", dice=("0.5", "0.3"), hd95=("6.0", "8.0")),
    row("s5", "train", dice=("0.4", "0.5"), hd95=("1.0", "4.0")),
    row("s3", "val", dice=("0.85", "0.85"), hd95=("1.0", "1.0")),
    row("s4", "infer", volume=("3.0", "0.5")),
]


def test_summary_gives_mean_and_median_per_split():
    summary = summarise(ROWS, CLASSES)

    assert summary["n_subjects"] == 5
    train = summary["splits"]["train"]
    assert train["n_subjects"] == 3
    assert train["dice_organ"]["mean"] == pytest.approx(0.6)
    assert train["dice_organ"]["median"] == pytest.approx(0.5)
    assert train["dice_organ"]["n"] == 3
    assert train["hd95_mm_tube"] == {"mean": pytest.approx(6.0), "median": 6.0, "n": 2}  # no NaN
    assert summary["splits"]["val"]["dice_tube"]["mean"] == pytest.approx(0.85)


def test_summary_of_unlabelled_split_has_volumes_only():
    infer = summarise(ROWS, CLASSES)["splits"]["infer"]

    assert infer["volume_ml_organ"]["mean"] == pytest.approx(3.0)
    assert not any(key.startswith(("dice", "hd95")) for key in infer)


def test_summary_over_all_splits():
    everyone = summarise(ROWS, CLASSES)["splits"]["all"]

    assert everyone["n_subjects"] == 5
    assert everyone["dice_organ"]["n"] == 4
    assert everyone["volume_ml_organ"]["mean"] == pytest.approx((1.5 * 4 + 3.0) / 5)


def test_summary_lists_worst_subjects_by_mean_dice():
    worst = summarise(ROWS, CLASSES, worst=2)["worst_subjects"]

    assert [w["subject"] for w in worst] == ["s2", "s5"]
    assert worst[0]["mean_dice"] == pytest.approx(0.4)
    assert worst[1]["mean_dice"] == pytest.approx(0.45)
    all_worst = summarise(ROWS, CLASSES)["worst_subjects"]
    assert [w["subject"] for w in all_worst] == ["s2", "s5", "s1", "s3"]  # s4 has no Dice


# --------------------------------------------------------------------------------------------
# evaluate_subject


def test_evaluate_subject_on_files(tmp_path):
    affine = affine_with_spacing((2.0, 2.0, 2.0), degrees=20.0)
    reference = cube((16, 16, 16), (2, 2, 2), (6, 6, 6), 1)
    reference[8:13, 8:13, 8:13] = 2
    prediction = cube((16, 16, 16), (4, 2, 2), (8, 6, 6), 1)
    prediction[8:13, 8:13, 8:13] = 2
    save_nifti(tmp_path / "seg.nii.gz", prediction, affine)
    save_nifti(tmp_path / "label.nii.gz", reference, affine)

    result = evaluate_subject(
        "sub-01", "test", str(tmp_path / "seg.nii.gz"), str(tmp_path / "label.nii.gz"), CLASSES
    )

    assert set(result) == set(metric_columns(CLASSES))
    assert (result["subject"], result["split"]) == ("sub-01", "test")
    assert result["dice_organ"] == pytest.approx(0.5)
    assert result["dice_tube"] == pytest.approx(1.0)
    assert result["hd95_mm_tube"] == pytest.approx(0.0)
    assert result["hd95_mm_organ"] > 0
    assert result["volume_ml_organ"] == pytest.approx(64 * 8 / 1000)
    assert result["volume_ml_tube"] == pytest.approx(1.0)


def test_evaluate_unlabelled_subject_gives_volumes_only(tmp_path):
    prediction = cube((10, 10, 10), (0, 0, 0), (5, 5, 5), 2)
    save_nifti(tmp_path / "seg.nii.gz", prediction, np.diag([2.0, 2.0, 2.0, 1.0]))

    result = evaluate_subject("sub-09", "infer", str(tmp_path / "seg.nii.gz"), None, CLASSES)

    assert result == {
        "subject": "sub-09",
        "split": "infer",
        "volume_ml_organ": 0.0,
        "volume_ml_tube": pytest.approx(1.0),
    }


@pytest.mark.parametrize(
    ("label_shape", "shift_mm", "problem"),
    [
        ((16, 16, 16), (0.0, 0.0, 3.0), "label affine differs from segmentation by 3.0 mm"),
        ((16, 16, 15), (0.0, 0.0, 0.0), r"label shape \(16, 16, 15\) differs from segmentation"),
    ],
    ids=["shifted", "other_shape"],
)
def test_a_label_off_the_segmentations_grid_fails_the_subject(
    tmp_path, label_shape, shift_mm, problem
):
    affine = affine_with_spacing((2.0, 2.0, 2.0), degrees=20.0)
    save_nifti(tmp_path / "seg.nii.gz", cube((16, 16, 16), (2, 2, 2), (8, 8, 8), 1), affine)
    moved = affine.copy()
    moved[:3, 3] += shift_mm
    label = tmp_path / "label.nii.gz"  # replaced after validation
    save_nifti(label, cube(label_shape, (2, 2, 2), (8, 8, 8), 1), moved)

    with pytest.raises(InvalidInputError, match=problem) as err:
        evaluate_subject("sub-03", "test", str(tmp_path / "seg.nii.gz"), str(label), CLASSES)

    assert (err.value.subject, err.value.path) == ("sub-03", str(label))


def test_a_label_within_the_tolerance_is_evaluated(tmp_path):
    affine = affine_with_spacing((2.0, 2.0, 2.0))
    labels = cube((16, 16, 16), (2, 2, 2), (8, 8, 8), 1)
    save_nifti(tmp_path / "seg.nii.gz", labels, affine)
    moved = affine.copy()
    moved[:3, 3] += [0.0, 0.0, 3.0]
    save_nifti(tmp_path / "label.nii.gz", labels, moved)

    result = evaluate_subject(
        "sub-03",
        "test",
        str(tmp_path / "seg.nii.gz"),
        str(tmp_path / "label.nii.gz"),
        CLASSES,
        affine_tolerance_mm=3.5,
    )

    assert result["dice_organ"] == pytest.approx(1.0)


def test_metric_columns_order():
    assert metric_columns(["a", "b"]) == [
        "subject",
        "split",
        "dice_a",
        "dice_b",
        "hd95_mm_a",
        "hd95_mm_b",
        "volume_ml_a",
        "volume_ml_b",
    ]


def test_hd95_of_a_2d_image_is_in_plane_in_mm():
    affine = affine_with_spacing([0.5, 2.0, 3.0])
    reference = cube((40, 40, 1), (10, 10, 0), (20, 20, 1))
    shifted = cube((40, 40, 1), (14, 10, 0), (24, 20, 1))  # 4 pixels of 0.5 mm along x

    dice, hd = dice_hd95(shifted, reference, affine, 2)

    assert dice[0] == pytest.approx(0.6)
    assert hd[0] == pytest.approx(2.0)  # outlines 2 mm apart; not the slab's faces
    assert class_volumes_ml(reference, affine, 2)[0] == pytest.approx(100 * 0.5 * 2.0 * 3.0 / 1000)
