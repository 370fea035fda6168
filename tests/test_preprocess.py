"""Geometry of preprocessing and of mapping predictions back to the native grid."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from skimage.filters import threshold_otsu

from cohortseg import preprocess
from cohortseg.cohort import demo_affine, demo_phantom
from cohortseg.preprocess import (
    Geometry,
    body_crop,
    normalise,
    otsu_threshold,
    prepare_image,
    prepare_label,
    reorient,
    resize,
    resize_affine,
    restore_canonical_labels,
    restore_labels,
    spacing_of,
    undo_reorient,
)
from tests.conftest import dice


def world(affine: np.ndarray, index: np.ndarray) -> np.ndarray:
    return np.asarray(affine)[:3, :3] @ index + np.asarray(affine)[:3, 3]


def centroid_world(labels: np.ndarray, affine: np.ndarray, c: int) -> np.ndarray:
    return world(affine, np.argwhere(labels == c).mean(axis=0))


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


def test_resampled_label_stays_in_place_in_world_coordinates() -> None:
    image, label, affine = demo_phantom([40, 36, 24], [1.5, 1.5, 3.0], seed=3)
    plan = {
        "target_spacing_mm": [1.0, 1.0, 1.0],
        "normalization": "zscore",
        "crop": True,
        "crop_margin": 3,
    }
    tensor, geometry = prepare_image(image, affine, plan)
    grid_label = prepare_label(label, geometry)[0].numpy()
    assert tensor.shape[1:] == grid_label.shape
    np.testing.assert_allclose(spacing_of(np.array(geometry.affine)), 1.0, atol=0.05)
    for c in (1, 2, 3):
        shift = centroid_world(grid_label, geometry.affine, c) - centroid_world(label, affine, c)
        assert np.linalg.norm(shift) < 1.0, f"class {c} moved by {shift} mm"


@pytest.mark.parametrize("seed", [1, 2, 5])
def test_prediction_maps_back_to_the_exact_native_grid(seed: int) -> None:
    image, label, affine = demo_phantom([36, 32, 20], [1.8, 1.8, 3.0], seed=seed)
    plan = {
        "target_spacing_mm": [1.5, 1.5, 1.5],
        "normalization": "zscore",
        "crop": True,
        "crop_margin": 2,
    }
    _, geometry = prepare_image(image, affine, plan)
    grid_label = prepare_label(label, geometry)[0].long()
    probs = torch.nn.functional.one_hot(grid_label, 4).permute(3, 0, 1, 2).float()
    back = restore_labels(probs, geometry)
    assert back.shape == label.shape and back.dtype == np.uint8
    for c in (1, 2, 3):
        assert dice(back, label, c) > 0.9


def test_identity_plan_round_trips_exactly() -> None:
    rng = np.random.default_rng(0)
    affine = demo_affine(rng, (20, 18, 16), [2.0, 2.0, 2.0])
    label = rng.integers(0, 4, (20, 18, 16)).astype(np.uint8)
    image = rng.normal(size=label.shape).astype(np.float32)
    canon_spacing = spacing_of(reorient(image, affine)[1])
    plan = {
        "target_spacing_mm": canon_spacing.tolist(),
        "normalization": "zscore",
        "crop": False,
        "crop_margin": 0,
    }
    _, geometry = prepare_image(image, affine, plan)
    grid = prepare_label(label, geometry)[0].long()
    probs = torch.nn.functional.one_hot(grid, 4).permute(3, 0, 1, 2).float()
    np.testing.assert_array_equal(restore_labels(probs, geometry), label)


def test_body_crop_contains_the_body_with_margin() -> None:
    vol = np.zeros((30, 30, 30), np.float32)
    vol[10:20, 5:25, 12:14] = 100.0
    box = body_crop(vol, margin=2)
    assert box == ((8, 22), (3, 27), (10, 16))


@pytest.mark.parametrize("seed", range(4))
def test_otsu_threshold_is_skimages(seed: int) -> None:
    rng = np.random.default_rng(seed)
    values = np.concatenate([rng.normal(100, 20, 3000), rng.normal(400 + 50 * seed, 60, 5000)])
    values = values.astype(np.float32).reshape(20, 20, 20)
    expected = threshold_otsu(values)
    assert otsu_threshold(torch.from_numpy(values)) == pytest.approx(expected, rel=1e-6)


def test_body_crop_of_a_tensor_is_that_of_the_array() -> None:
    image, _, _ = demo_phantom([30, 26, 22], [2.0, 2.0, 2.0], seed=4)
    image = image.astype(np.float32)
    assert body_crop(torch.from_numpy(image), 3) == body_crop(image, 3)


def full_grid_restore(probabilities: torch.Tensor, geometry: Geometry) -> np.ndarray:
    """The plain definition: pad with background, resize the whole grid, argmax."""
    full = torch.zeros((probabilities.shape[0], *geometry.resampled_shape))
    full[0] = 1.0
    full[(slice(None), *(slice(a, b) for a, b in geometry.crop))] = probabilities
    full = torch.nn.functional.interpolate(
        full[None], size=geometry.canonical_shape, mode="trilinear", align_corners=False
    )[0]
    return torch.argmax(full, dim=0).to(torch.uint8).numpy()


# boundary voxels one by one (few boundaries: a trained network) or all voxels (many)
@pytest.mark.parametrize("dense_fraction", [1.0, 0.0], ids=["by_voxel", "all_voxels"])
@pytest.mark.parametrize(
    ("canonical", "resampled", "crop"),
    [
        ((30, 26, 22), (45, 13, 22), ((5, 40), (2, 11), (0, 22))),  # up, down, identity
        ((20, 21, 33), (11, 28, 48), ((0, 11), (7, 28), (19, 34))),
        ((16, 16, 16), (16, 16, 16), ((3, 9), (0, 16), (4, 5))),  # identity, thin crop
        ((12, 40, 9), (30, 20, 9), ((0, 30), (0, 20), (0, 9))),  # no crop
    ],
)
def test_restoring_only_the_crop_in_chunks_matches_the_full_grid_definition(
    canonical, resampled, crop, dense_fraction, monkeypatch
) -> None:
    monkeypatch.setattr(preprocess, "DENSE_FRACTION", dense_fraction)
    geometry = Geometry(
        native_shape=canonical,
        native_affine=np.eye(4).tolist(),
        orientation=[[0, 1], [1, 1], [2, 1]],
        canonical_shape=canonical,
        resampled_shape=resampled,
        crop=crop,
        affine=np.eye(4).tolist(),
    )
    torch.manual_seed(0)
    shape = [b - a for a, b in crop]
    probs = torch.softmax(3 * torch.randn(4, *shape), dim=0)
    expected = full_grid_restore(probs, geometry)
    labels = restore_canonical_labels(probs, geometry).numpy()
    assert labels.shape == canonical and labels.dtype == np.uint8
    assert np.mean(labels != expected) < 1e-3  # float rounding may break a near tie
    chunked = restore_canonical_labels(probs, geometry, chunk_voxels=7).numpy()
    np.testing.assert_array_equal(chunked, labels)


def test_zscore_normalisation() -> None:
    x = torch.randn(1, 10, 10, 10) * 50 + 300
    y = normalise(x, {"normalization": "zscore"})
    assert abs(float(y.mean())) < 1e-4 and abs(float(y.std()) - 1) < 1e-3


def test_ct_normalisation_clips_to_foreground_percentiles() -> None:
    plan = {
        "normalization": "ct",
        "intensity": {
            "percentile_00_5": -100.0,
            "percentile_99_5": 200.0,
            "mean": 50.0,
            "std": 100.0,
        },
    }
    y = normalise(torch.tensor([-1000.0, 50.0, 3000.0]), plan)
    np.testing.assert_allclose(y.numpy(), [-1.5, 0.0, 1.5])


def test_nearest_resize_keeps_label_values() -> None:
    lab = torch.randint(0, 4, (1, 9, 9, 9), dtype=torch.uint8)
    out = resize(lab, (13, 5, 9), "nearest")
    assert out.dtype == torch.uint8 and set(out.unique().tolist()) <= {0, 1, 2, 3}
