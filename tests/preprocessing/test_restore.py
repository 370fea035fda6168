"""Mapping predictions on the preprocessed grid back to the exact native grid."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cohortseg.core.geometry import reorient, spacing_of
from cohortseg.inputs.demo import demo_affine, demo_phantom
from cohortseg.preprocessing import restore
from cohortseg.preprocessing.prepare import Geometry, prepare_image, prepare_label
from cohortseg.preprocessing.restore import restore_canonical_labels, restore_labels
from tests.conftest import dice


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


def test_a_2d_image_stays_one_slice_and_its_prediction_maps_back_in_plane() -> None:
    from cohortseg.inputs.demo import demo_phantom_2d

    image, label, affine = demo_phantom_2d([48, 44, 16], [1.8, 1.8, 3.0], seed=4)
    plan = {
        "target_spacing_mm": [1.2, 1.2, 1.0],  # the slice is not resampled to 1 mm
        "normalization": "zscore",
        "crop": True,
        "crop_margin": 2,
    }
    tensor, geometry = prepare_image(image, affine, plan)
    assert tensor.shape[-1] == 1 and tensor.shape[1] > 48
    grid_label = prepare_label(label, geometry)[0].long()
    probs = torch.nn.functional.one_hot(grid_label, 4).permute(3, 0, 1, 2).float()
    back = restore_labels(probs, geometry)
    assert back.shape == label.shape == (48, 44, 1)
    for c in (1, 2, 3):
        assert dice(back, label, c) > 0.85


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
    monkeypatch.setattr(restore, "DENSE_FRACTION", dense_fraction)
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
