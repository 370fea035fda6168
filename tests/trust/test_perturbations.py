"""Graded perturbations: strength 0 changes nothing, and each does what it says."""

from __future__ import annotations

import numpy as np
import pytest

from cohortseg.trust.perturbations import (
    DEGRADATIONS,
    MAXIMUM,
    ROBUSTNESS,
    bias_field,
    contrast_shift,
    gamma,
    gaussian_noise,
    resolution_loss,
    rotation,
)


def volume(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    image = (100 + 20 * rng.standard_normal((20, 18, 12))).astype(np.float32)
    label = np.zeros(image.shape, np.uint8)
    label[5:12, 4:10, 3:8] = 1
    return image, label


@pytest.mark.parametrize("name", sorted({**ROBUSTNESS, **DEGRADATIONS}))
def test_strength_0_leaves_image_and_label_unchanged(name):
    image, label = volume()
    out, out_label = {**ROBUSTNESS, **DEGRADATIONS}[name](image, label, 0.0, 3)
    np.testing.assert_allclose(out, image, rtol=1e-5, atol=1e-3)
    np.testing.assert_array_equal(out_label, label)
    assert out.dtype == np.float32 and out.shape == image.shape


def test_noise_has_the_stated_standard_deviation_and_depends_on_the_seed():
    image, label = volume()
    out, _ = gaussian_noise(image, label, 0.5, seed=1)
    assert np.std(out - image) == pytest.approx(0.5 * MAXIMUM["noise"] * np.std(image), rel=0.05)
    assert not np.array_equal(out, gaussian_noise(image, label, 0.5, seed=2)[0])


def test_bias_field_peak_gain_is_the_stated_one():
    image = np.full((16, 16, 8), 10.0, np.float32)
    image[0, 0, 0] = 0.0  # the minimum: the gain applies above it
    out, _ = bias_field(image, np.zeros(image.shape, np.uint8), 1.0, seed=0)
    log_gain = np.log(out[1:, 1:, 1:] / 10.0)
    assert np.abs(log_gain).max() == pytest.approx(MAXIMUM["bias_field"], rel=0.1)


def test_gamma_darkens_mid_intensities_and_keeps_the_range():
    image = np.linspace(0, 100, 1000, dtype=np.float32).reshape(10, 10, 10)
    out, _ = gamma(image, np.zeros(image.shape, np.uint8), 1.0)
    assert out.min() == pytest.approx(0) and out.max() == pytest.approx(100)
    assert out[5, 0, 0] < image[5, 0, 0]


def test_resolution_loss_smears_along_the_first_axis_only_without_shifting():
    image = np.zeros((15, 9, 9), np.float32)
    image[7, 4, 4] = 1.0
    out, _ = resolution_loss(image, np.zeros(image.shape, np.uint8), 1.0)
    # a box 4 voxels wide centred on voxel 7: all of voxels 6, 7 and 8, half of 5 and of 9
    expected = np.array([0.5, 1, 1, 1, 0.5]) / 4
    np.testing.assert_allclose(out[5:10, 4, 4], expected, rtol=1e-6)
    assert np.count_nonzero(out) == 5 and out.sum() == pytest.approx(1.0)
    half, _ = resolution_loss(image, np.zeros(image.shape, np.uint8), 0.5)  # 2.5 voxels wide
    np.testing.assert_allclose(half[6:9, 4, 4], np.array([0.75, 1, 0.75]) / 2.5, rtol=1e-6)


def test_rotation_moves_the_label_with_the_image():
    image, label = volume()
    image = np.where(label > 0, 500.0, 100.0).astype(np.float32)
    out, moved = rotation(image, label, 1.0)
    assert not np.array_equal(moved, label)
    assert abs(int(moved.sum()) - int(label.sum())) < 0.15 * label.sum()
    assert out[moved > 0].mean() > 400  # the bright structure is where the label went


def test_contrast_shift_moves_only_the_brighter_half():
    image, label = volume()
    out, _ = contrast_shift(image, label, 1.0)
    bright = image > np.median(image)
    shift = MAXIMUM["contrast_shift"] * np.std(image)
    np.testing.assert_allclose(out[bright] - image[bright], shift, rtol=1e-4)
    np.testing.assert_array_equal(out[~bright], image[~bright])
