"""Graded perturbations of a subject's image (and, where the geometry moves, its label), for
measuring how segmentation quality and uncertainty degrade: Gaussian noise, a smooth bias
field, intensity scaling, gamma, resolution loss along one axis, small rotations, blur and a
contrast shift.

Every perturbation takes a native (X, Y, Z) image and label map and a strength in [0, 1]
(0: unchanged) that is mapped to a physical amount (:data:`MAXIMUM` at strength 1), and a seed
for the perturbations that draw random numbers; it returns the perturbed image (float32) and
label map (uint8). Intensity amounts are relative to the image's own spread (the standard
deviation of its voxels), so they mean the same for MR and CT.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy import ndimage

Perturbation = Callable[[np.ndarray, np.ndarray, float, int], tuple[np.ndarray, np.ndarray]]


#: What strength 1 means, per perturbation (units in the names).
MAXIMUM = {
    "noise": 0.6,  # Gaussian noise σ, × the image's standard deviation
    "bias_field": 0.8,  # peak of log(gain) of a smooth multiplicative field: gain × e^±0.8
    "intensity_scale": 1.0,  # intensities × (1 + 1.0)
    "gamma": 1.0,  # gamma 1 + 1.0 on intensities rescaled to [0, 1]
    "resolution_loss": 4.0,  # width (voxels) of the box averaged along the image's first axis
    "rotation_deg": 15.0,  # degrees about the image's third voxel axis
    "blur": 2.0,  # Gaussian blur σ, voxels
    "contrast_shift": 1.5,  # voxels above the median shifted by 1.5 × the standard deviation
}


def _spread(image: np.ndarray) -> float:
    return float(np.std(image)) or 1.0


def gaussian_noise(
    image: np.ndarray, label: np.ndarray, strength: float, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Add Gaussian noise of σ = strength × ``MAXIMUM["noise"]`` × the image's SD."""
    rng = np.random.default_rng(seed)
    sigma = strength * MAXIMUM["noise"] * _spread(image)
    noisy = image + rng.normal(0.0, 1.0, image.shape) * sigma
    return noisy.astype(np.float32), label


def bias_field(
    image: np.ndarray, label: np.ndarray, strength: float, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Multiply by a smooth field exp(a · (random linear + quadratic in the voxel
    coordinates scaled to [-1, 1])), peak |log gain| = strength × ``MAXIMUM["bias_field"]``."""
    rng = np.random.default_rng(seed)
    coords = np.meshgrid(*(np.linspace(-1, 1, n) for n in image.shape), indexing="ij")
    field = sum(rng.uniform(-1, 1) * c + rng.uniform(-1, 1) * c**2 for c in coords)
    field = field / max(float(np.abs(field).max()), 1e-9) * strength * MAXIMUM["bias_field"]
    # shift to a non-negative image so that the gain scales intensities, not their sign
    lo = float(image.min())
    return ((image - lo) * np.exp(field) + lo).astype(np.float32), label


def intensity_scale(
    image: np.ndarray, label: np.ndarray, strength: float, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Multiply every intensity by 1 + strength × ``MAXIMUM["intensity_scale"]`` (a global
    change: z-score normalisation removes it, CT normalisation does not)."""
    factor = 1.0 + strength * MAXIMUM["intensity_scale"]
    return (image * factor).astype(np.float32), label


def gamma(
    image: np.ndarray, label: np.ndarray, strength: float, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Gamma 1 + strength × ``MAXIMUM["gamma"]`` on intensities rescaled to [0, 1], then back
    to the image's range."""
    lo, hi = float(image.min()), float(image.max())
    if hi <= lo:
        return image.astype(np.float32), label
    unit = (image - lo) / (hi - lo)
    out = unit ** (1.0 + strength * MAXIMUM["gamma"]) * (hi - lo) + lo
    return out.astype(np.float32), label


def resolution_loss(
    image: np.ndarray, label: np.ndarray, strength: float, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Thick slices along the first voxel axis: each voxel becomes the mean over a centred box
    of width 1 + strength × (``MAXIMUM["resolution_loss"]`` - 1) voxels along it (partial
    volume; a fractional width weighs the two end voxels in part), so the grid stays the same
    and nothing shifts."""
    width = 1.0 + strength * (MAXIMUM["resolution_loss"] - 1.0)
    if width <= 1.0:
        return image.astype(np.float32), label
    n = int(np.ceil(width / 2 - 0.5))
    # the share of voxel k (covering k ± 0.5) inside the box [-width / 2, width / 2]
    kernel = np.clip(width / 2 + 0.5 - np.abs(np.arange(-n, n + 1)), 0.0, 1.0)
    out = ndimage.convolve1d(
        image.astype(np.float32), kernel / kernel.sum(), axis=0, mode="nearest"
    )
    return out.astype(np.float32), label


def rotation(
    image: np.ndarray, label: np.ndarray, strength: float, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Rotate image (linear) and label (nearest) by strength × ``MAXIMUM["rotation_deg"]``
    degrees about the third voxel axis, about the volume's centre, on the same grid."""
    angle = strength * MAXIMUM["rotation_deg"]
    if angle == 0:
        return image.astype(np.float32), label
    lo = float(image.min())
    rotated = ndimage.rotate(image, angle, axes=(0, 1), reshape=False, order=1, cval=lo)
    moved = ndimage.rotate(label, angle, axes=(0, 1), reshape=False, order=0, cval=0)
    return rotated.astype(np.float32), moved.astype(np.uint8)


def blur(
    image: np.ndarray, label: np.ndarray, strength: float, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian blur of σ = strength × ``MAXIMUM["blur"]`` voxels along every axis."""
    sigma = strength * MAXIMUM["blur"]
    out = ndimage.gaussian_filter(image.astype(np.float32), sigma) if sigma > 0 else image
    return out.astype(np.float32), label


def contrast_shift(
    image: np.ndarray, label: np.ndarray, strength: float, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Shift the voxels brighter than the image's median by strength ×
    ``MAXIMUM["contrast_shift"]`` × its SD: the tissues' contrast changes (a global shift
    would be normalised away)."""
    shift = strength * MAXIMUM["contrast_shift"] * _spread(image)
    out = np.where(image > np.median(image), image + shift, image)
    return out.astype(np.float32), label


#: The perturbations of the robustness benchmark, by name.
ROBUSTNESS: dict[str, Perturbation] = {
    "noise": gaussian_noise,
    "bias_field": bias_field,
    "intensity_scale": intensity_scale,
    "gamma": gamma,
    "resolution_loss": resolution_loss,
    "rotation": rotation,
}


#: The degradations that the uncertainty must notice (benchmark and test).
DEGRADATIONS: dict[str, Perturbation] = {
    "noise": gaussian_noise,
    "blur": blur,
    "contrast_shift": contrast_shift,
}
