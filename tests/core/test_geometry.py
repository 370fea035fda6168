"""Voxel grids and world space: orientation, resized and cropped grids, voxel volume, boxes,
RAS/LPS and the check that a label lies on its image's grid."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from cohortseg.core.errors import InvalidInputError
from cohortseg.core.geometry import (
    check_same_grid,
    corner_distance_mm,
    crop_affine,
    crop_to_mask,
    grid_mismatch,
    ras_to_lps,
    reorient,
    resampled_shape,
    resize_affine,
    spacing_of,
    undo_reorient,
    voxel_box,
    voxel_volume_ml,
    world_bounding_box,
)
from cohortseg.core.redact import REDACT_ENV
from cohortseg.inputs.demo import demo_affine


def world(affine: np.ndarray, index: np.ndarray) -> np.ndarray:
    return np.asarray(affine)[:3, :3] @ index + np.asarray(affine)[:3, 3]


def oblique_affine(seed: int, shape=(30, 28, 24), spacing=(1.0, 1.2, 1.5)) -> np.ndarray:
    return demo_affine(np.random.default_rng(seed), shape, spacing)


# --------------------------------------------------------------------------------------------
# Orientation, resized and cropped grids


@pytest.mark.parametrize("seed", range(6))
def test_reorient_is_a_lossless_permutation_that_keeps_world_positions(seed: int) -> None:
    rng = np.random.default_rng(seed)
    shape = (7, 9, 11)
    affine = demo_affine(rng, shape, [1.0, 2.0, 3.0])
    data = rng.integers(0, 1000, shape).astype(np.int16)
    canon, canon_affine, ornt = reorient(data, affine)
    # the canonical axes point roughly along +R, +A, +S
    assert all(canon_affine[axis, axis] > 0 for axis in range(3))
    # every voxel keeps its value at the same world position
    for idx in [(0, 0, 0), (6, 8, 10), (3, 1, 7)]:
        w = world(affine, np.array(idx))
        canon_idx = np.rint(np.linalg.solve(canon_affine[:3, :3], w - canon_affine[:3, 3]))
        assert canon[tuple(canon_idx.astype(int))] == data[idx]
    np.testing.assert_array_equal(undo_reorient(canon, ornt), data)


def test_resize_affine_keeps_the_field_of_view_and_centres() -> None:
    affine = np.diag([2.0, 3.0, 1.5, 1.0])
    old, new = (10, 20, 30), (20, 30, 15)
    out = resize_affine(affine, old, new)
    np.testing.assert_allclose(spacing_of(out), [1.0, 2.0, 3.0])
    # first and last voxel edges coincide: the centre of the grid is the same world point
    np.testing.assert_allclose(
        world(out, (np.array(new) - 1) / 2), world(affine, (np.array(old) - 1) / 2)
    )


def test_resampled_shape_covers_the_field_of_view_with_at_least_one_voxel() -> None:
    assert resampled_shape((10, 20, 3), (2.0, 1.0, 0.1), (1.0, 2.0, 1.0)) == (20, 10, 1)


def test_the_slice_axis_of_a_2d_image_is_never_resampled() -> None:
    assert resampled_shape((10, 20, 1), (2.0, 1.0, 5.0), (1.0, 2.0, 1.0)) == (20, 10, 1)


def test_crop_affine_keeps_world_positions() -> None:
    affine = oblique_affine(3)
    start = np.array([4, 2, 7])
    cropped = crop_affine(affine, start)
    np.testing.assert_allclose(
        world(cropped, np.array([1, 2, 3])), world(affine, start + [1, 2, 3])
    )


def test_crop_to_mask_returns_the_smallest_box_and_its_affine() -> None:
    mask = np.zeros((10, 9, 8), bool)
    mask[2, 3:5, 6] = mask[4, 3, 1] = True
    affine = oblique_affine(1, mask.shape)
    assert [a.tolist() for a in voxel_box(mask)] == [[2, 3, 1], [5, 5, 7]]
    box, box_affine = crop_to_mask(mask, affine)
    assert box.shape == (3, 2, 6) and box.sum() == mask.sum()
    np.testing.assert_allclose(world(box_affine, np.zeros(3)), world(affine, np.array([2, 3, 1])))


# --------------------------------------------------------------------------------------------
# Voxel volume


@pytest.mark.parametrize("flip", [1.0, -1.0])
def test_voxel_volume_is_that_of_the_affine_whatever_its_rotation_and_handedness(flip) -> None:
    affine = oblique_affine(2, spacing=(2.0, 2.0, 2.0))
    affine[:3, 0] *= flip
    expected = float(np.prod(spacing_of(affine))) / 1000.0
    assert voxel_volume_ml(affine) == pytest.approx(expected)
    assert voxel_volume_ml(np.diag([0.5, 1.0, 5.0, 1.0])) == pytest.approx(0.0025)


# --------------------------------------------------------------------------------------------
# World boxes and RAS/LPS


def brute_force_box(mask, affine):
    """World box of every corner of every voxel of the mask."""
    corners = []
    for i, j, k in np.argwhere(mask):
        for d in itertools.product((-0.5, 0.5), repeat=3):
            corners.append(affine[:3, :3] @ (np.array([i, j, k]) + d) + affine[:3, 3])
    corners = np.array(corners)
    return corners.min(axis=0), corners.max(axis=0)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_world_box_holds_every_voxel_corner_tightly_for_oblique_affines(seed):
    rng = np.random.default_rng(seed)
    mask = np.zeros((9, 8, 7), bool)
    mask[tuple(rng.integers(0, [9, 8, 7], size=(12, 3)).T)] = True  # scattered voxels
    affine = oblique_affine(seed, mask.shape)
    lo, hi = world_bounding_box(mask, affine)
    want_lo, want_hi = brute_force_box(mask, affine)
    np.testing.assert_allclose(lo, want_lo, atol=1e-9)
    np.testing.assert_allclose(hi, want_hi, atol=1e-9)


def test_world_box_of_a_solid_block_touching_the_edges():
    mask = np.zeros((6, 5, 4), bool)
    mask[:, 1:4, 1:] = True  # a solid block with interior voxels, on three faces of the volume
    affine = oblique_affine(7, mask.shape)
    lo, hi = world_bounding_box(mask, affine)
    want_lo, want_hi = brute_force_box(mask, affine)
    np.testing.assert_allclose(lo, want_lo, atol=1e-9)
    np.testing.assert_allclose(hi, want_hi, atol=1e-9)


def test_world_box_of_an_empty_mask_is_none():
    assert world_bounding_box(np.zeros((3, 3, 3), bool), np.eye(4)) is None


def test_ras_to_lps_flips_x_and_y_and_is_its_own_inverse():
    ras = np.array([[1.0, 2.0, 3.0], [-4.0, 5.0, -6.0]])
    np.testing.assert_array_equal(ras_to_lps(ras), [[-1.0, -2.0, 3.0], [4.0, -5.0, -6.0]])
    np.testing.assert_array_equal(ras_to_lps(ras_to_lps(ras)), ras)


# --------------------------------------------------------------------------------------------
# Same grid


def test_corner_distance_is_the_largest_corner_shift():
    a = np.eye(4)
    b = np.eye(4)
    b[:3, 3] = [0.0, 3.0, 4.0]
    assert corner_distance_mm(a, b, (5, 5, 5)) == pytest.approx(5.0)
    b = np.diag([1.0, 1.0, 1.1, 1.0])  # a wrong spacing moves the far corners most
    assert corner_distance_mm(a, b, (5, 5, 11)) == pytest.approx(1.0)


def test_grid_mismatch_in_words():
    affine = np.diag([1.0, 1.0, 2.0, 1.0])
    shifted = affine.copy()
    shifted[0, 3] = 2.1
    assert grid_mismatch((4, 5, 6), affine, (4, 5, 6), affine) is None
    assert grid_mismatch((4, 5, 6), affine, (4, 5, 7), affine) == (
        "shape (4, 5, 7) differs from image shape (4, 5, 6)"
    )
    assert grid_mismatch((4, 5, 6), affine, (4, 5, 6), shifted) == (
        "affine differs from image by 2.1 mm"
    )
    assert grid_mismatch((4, 5, 6), affine, (4, 5, 6), shifted, tolerance_mm=2.5) is None
    assert "from segmentation by" in grid_mismatch(
        (4, 5, 6), affine, (4, 5, 6), shifted, reference="segmentation"
    )


def test_check_same_grid_names_subject_file_and_problem():
    affine = oblique_affine(4, (8, 8, 8))
    moved = affine.copy()
    moved[:3, 3] += [0.0, 0.0, 3.0]
    check_same_grid("sub-01", (8, 8, 8), affine, (8, 8, 8), affine, "l.nii.gz")
    with pytest.raises(InvalidInputError, match=r"affine differs from image by 3.0 mm") as err:
        check_same_grid("sub-01", (8, 8, 8), affine, (8, 8, 8), moved, "labels/l.nii.gz")
    assert (err.value.subject, err.value.path) == ("sub-01", "labels/l.nii.gz")
    assert str(err.value).startswith("sub-01: labels/l.nii.gz: label affine differs")
    with pytest.raises(InvalidInputError, match=r"shape \(8, 8, 9\) differs from image shape"):
        check_same_grid("sub-01", (8, 8, 8), affine, (8, 8, 9), affine, "l.nii.gz")
    # within the tolerance
    check_same_grid("sub-01", (8, 8, 8), affine, (8, 8, 8), moved, "l.nii.gz", tolerance_mm=3.5)


def test_check_same_grid_keeps_the_path_out_of_a_redacted_message(monkeypatch):
    monkeypatch.setenv(REDACT_ENV, "1")
    with pytest.raises(InvalidInputError) as err:
        check_same_grid("sub-01", (8, 8, 8), np.eye(4), (8, 8, 9), np.eye(4), "/secret/l.nii")
    assert "/secret" not in str(err.value) and "sub-01" in str(err.value)
