"""Training augmentation: per-sample seeds, rigid rotations and zooms that move labels with
their voxels, gamma within the intensity range."""

from __future__ import annotations

import math

import pytest
import torch

from cohortseg.training.augment import augment, gamma_transform, spatial_transform
from tests.conftest import default_config

DEFAULTS = default_config()["training"]["augmentation"]
EVERYTHING = {**DEFAULTS, "spatial_probability": 1.0, "gamma_probability": 1.0}


def batch(n: int = 3, shape=(12, 10, 8)) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    return torch.randn(n, 1, *shape, generator=gen), torch.randint(
        0, 4, (n, 1, *shape), generator=gen
    )


def cube_label(n: int = 16, lo: int = 5, hi: int = 9) -> torch.Tensor:
    label = torch.zeros(1, n, n, n, dtype=torch.uint8)
    label[0, lo:hi, 6:10, 3:13] = 2
    label[0, 4:6, 4:6, 4:6] = 1
    return label


@pytest.mark.parametrize("settings", [DEFAULTS, EVERYTHING])
def test_augmentation_does_not_depend_on_how_samples_are_batched(settings):
    image, label = batch()
    seeds = [11, 12, 13]
    whole = augment(image, label, seeds, settings)
    split = [
        augment(image[k : k + 1], label[k : k + 1], seeds[k : k + 1], settings) for k in range(3)
    ]
    assert torch.equal(whole[0], torch.cat([s[0] for s in split]))
    assert torch.equal(whole[1], torch.cat([s[1] for s in split]))
    assert not torch.equal(whole[0], image)
    again = augment(image, label, seeds, settings)
    assert torch.equal(again[0], whole[0]) and torch.equal(again[1], whole[1])
    assert whole[1].dtype == label.dtype and set(whole[1].unique().tolist()) <= {0, 1, 2, 3}


def test_without_spatial_transforms_labels_only_flip():
    image, label = batch()
    settings = {**DEFAULTS, "spatial_probability": 0.0}
    _, out = augment(image, label, [1, 2, 3], settings)
    for k in range(3):
        assert sorted(out[k].flatten().tolist()) == sorted(label[k].flatten().tolist())


def test_spatial_transforms_happen_at_their_probability():
    image, label = batch(n=1)
    settings = {**DEFAULTS, "spatial_probability": 0.2}
    counts = label.flatten().bincount(minlength=4)
    moved = sum(
        not torch.equal(
            augment(image, label, [seed], settings)[1].flatten().bincount(minlength=4), counts
        )
        for seed in range(200)
    )  # flips keep the class counts; a rotation or zoom changes them
    assert 20 <= moved <= 60  # about 40 of 200


def test_the_identity_transform_changes_nothing():
    label = cube_label()
    image = torch.randn(1, 16, 16, 16, generator=torch.Generator().manual_seed(1))
    out_image, out_label = spatial_transform(image, label, [0.0, 0.0, 0.0], 1.0)
    assert torch.equal(out_label, label)
    torch.testing.assert_close(out_image, image, atol=1e-5, rtol=0)


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_a_quarter_turn_is_a_rigid_rotation_of_the_voxels(axis):
    label = cube_label()
    angles = [0.0, 0.0, 0.0]
    angles[axis] = math.pi / 2
    image, out = spatial_transform(label.float(), label, angles, 1.0)
    turns = [torch.rot90(label, k, dims) for dims in [(1, 2), (1, 3), (2, 3)] for k in (1, -1)]
    assert any(torch.equal(out, t) for t in turns)  # voxel centres map onto voxel centres
    torch.testing.assert_close(image, out.float(), atol=1e-4, rtol=0)  # image moves with label
    assert torch.equal(out.unique(), label.unique())


def test_a_zoom_enlarges_about_the_centre():
    n = 16
    label = torch.zeros(1, n, n, n, dtype=torch.uint8)
    label[0, 6:10, 6:10, 6:10] = 1  # 4³ cube at the centre
    _, out = spatial_transform(label.float(), label, [0.0, 0.0, 0.0], 2.0)
    assert int(out.sum()) == 8**3
    assert torch.equal(out[0, 4:12, 4:12, 4:12], torch.ones(8, 8, 8, dtype=torch.uint8))
    _, small = spatial_transform(label.float(), label, [0.0, 0.0, 0.0], 0.5)
    assert int(small.sum()) == 2**3


def test_small_rotations_keep_image_and_label_together():
    label = cube_label()
    image, out = spatial_transform(label.float(), label, [0.2, -0.15, 0.1], 1.1)
    agree = (image.round().to(torch.uint8) == out).float().mean()
    assert agree > 0.97
    assert 0.8 < out.bool().sum() / (label.bool().sum() * 1.1**3) < 1.2


def test_gamma_keeps_the_intensity_range():
    image = torch.linspace(-2, 3, 1000).reshape(1, 10, 10, 10)
    out = gamma_transform(image, 1.5)
    assert float(out.min()) == pytest.approx(-2) and float(out.max()) == pytest.approx(3)
    assert float(out.mean()) < float(image.mean())  # gamma > 1 darkens the middle
    torch.testing.assert_close(gamma_transform(image, 1.0), image)


def test_2d_samples_rotate_about_the_slice_normal_zoom_and_flip_in_plane_only():
    image, label = batch(n=8, shape=(16, 12, 1))
    label = label.to(torch.uint8)

    out_image, out_label = augment(image, label, list(range(8)), EVERYTHING)

    assert out_image.shape == image.shape and out_label.shape == label.shape
    assert set(out_label.unique().tolist()) <= {0, 1, 2, 3}
    # the slice is never emptied by a tilt out of the plane (a 3D rotation of a one-voxel slab)
    assert all(bool(out_label[k].any()) for k in range(8))


def test_a_2d_quarter_turn_about_the_slice_normal_is_rigid():
    label = torch.zeros(1, 12, 12, 1, dtype=torch.uint8)
    label[0, 2:5, 6:8, 0] = 1
    image = label.float()

    # spatial_transform's angles are about the axes of affine_grid's (Z, Y, X) coordinates
    _, turned = spatial_transform(image, label, [math.pi / 2, 0.0, 0.0], 1.0)

    assert int(turned.sum()) == int(label.sum())
    assert torch.equal(turned[0, :, :, 0], torch.rot90(label[0, :, :, 0], 1, (0, 1))) or (
        torch.equal(turned[0, :, :, 0], torch.rot90(label[0, :, :, 0], -1, (0, 1)))
    )
