"""Training augmentation on the batch's device: random rotations and scalings, flips, gamma,
intensity scaling and shift, and Gaussian noise.

Each sample's transform is drawn from its own seed (see
:class:`cohortseg.training.batches.EpochBatchSampler`), so the augmented batch does not depend on
how samples are grouped into batches or ranks, and a resumed run sees the same augmentations as one
that never stopped. The work is tensor arithmetic and one ``grid_sample`` per spatially
transformed sample, on whatever device the batch is on (the GPU when there is one), so CPU cores
do not limit a fast GPU.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F

from cohortseg.inference.predictor import FLIP_AXES

# Uniform draws per sample, in this order (fixed, so a seed always means the same transform).
_FLIPS, _SPATIAL, _ANGLES, _SCALE, _GAMMA, _GAMMA_VALUE, _GAIN, _SHIFT, _NOISE = (
    slice(0, 3),
    3,
    slice(4, 7),
    7,
    8,
    9,
    10,
    11,
    12,
)


_DRAWS = 13


def rotation_matrix(angles_rad: Sequence[float]) -> torch.Tensor:
    """The 3×3 rotation about the three axes by ``angles_rad`` (applied x, then y, then z)."""
    cx, cy, cz = (math.cos(a) for a in angles_rad)
    sx, sy, sz = (math.sin(a) for a in angles_rad)
    rx = torch.tensor([[1, 0, 0], [0, cx, -sx], [0, sx, cx]], dtype=torch.float64)
    ry = torch.tensor([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]], dtype=torch.float64)
    rz = torch.tensor([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]], dtype=torch.float64)
    return rz @ ry @ rx


def spatial_transform(
    image: torch.Tensor, label: torch.Tensor, angles_rad: Sequence[float], scale: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotate one sample about its centre by ``angles_rad`` and zoom it by ``scale`` (> 1
    enlarges), in voxel coordinates; the image is interpolated linearly, the label by nearest
    neighbour, and what comes from outside the patch is 0 (background). ``image`` and ``label``
    are (C, X, Y, Z)."""
    shape = image.shape[1:]
    dtype = torch.float64 if image.dtype == torch.float64 else torch.float32
    # affine_grid works in coordinates normalised per axis to [-1, 1], listed as (Z, Y, X):
    # conjugate the voxel-space transform with the half sizes so that rotations stay rigid
    half = torch.tensor([n / 2 for n in reversed(shape)], dtype=torch.float64)
    matrix = torch.diag(1 / half) @ (rotation_matrix(angles_rad) / scale) @ torch.diag(half)
    theta = torch.cat([matrix, torch.zeros(3, 1, dtype=torch.float64)], dim=1)
    grid = F.affine_grid(theta[None].to(image.device, dtype), [1, 1, *shape], align_corners=False)
    moved = F.grid_sample(
        image[None].to(dtype), grid, mode="bilinear", padding_mode="zeros", align_corners=False
    )
    moved_label = F.grid_sample(
        label[None].to(dtype), grid, mode="nearest", padding_mode="zeros", align_corners=False
    )
    return moved[0].to(image.dtype), moved_label[0].to(label.dtype)


def gamma_transform(image: torch.Tensor, gamma: float) -> torch.Tensor:
    """``image`` rescaled to [0, 1], raised to ``gamma`` and scaled back to its range."""
    lo, hi = image.min(), image.max()
    span = (hi - lo).clamp_min(1e-8)
    return ((image - lo) / span).pow(gamma) * span + lo


def augment_sample(
    image: torch.Tensor, label: torch.Tensor, seed: int, settings: Mapping[str, Any]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Augment one (C, X, Y, Z) sample with the transform that ``seed`` draws.

    A 2D sample (Z = 1, a one-slice patch) is rotated about the slice normal only, zoomed
    in-plane only (there is nothing to zoom along one voxel) and flipped in-plane only; it
    draws the same numbers, so a seed means the same in-plane transform as in 3D.
    """
    r = torch.rand(_DRAWS, generator=torch.Generator().manual_seed(seed)).tolist()
    flat = image.shape[-1] == 1
    if r[_SPATIAL] < settings["spatial_probability"]:
        limit = math.radians(settings["rotation_deg"])
        angles = [limit * (2 * u - 1) for u in r[_ANGLES]]
        if flat:  # rotation_matrix's first angle turns the grid's (Z, Y, X) last two axes
            angles = [angles[0], 0.0, 0.0]
        lo, hi = settings["scaling"]
        image, label = spatial_transform(image, label, angles, lo + (hi - lo) * r[_SCALE])
    dims = [
        axis + 1
        for axis, u in zip(FLIP_AXES, r[_FLIPS], strict=True)
        if u < 0.5 and image.shape[axis + 1] > 1
    ]
    if dims:
        image, label = image.flip(dims), label.flip(dims)
    if r[_GAMMA] < settings["gamma_probability"]:
        lo, hi = settings["gamma"]
        image = gamma_transform(image, lo + (hi - lo) * r[_GAMMA_VALUE])
    image = image * (0.9 + 0.2 * r[_GAIN]) + 0.2 * (r[_SHIFT] - 0.5)
    if r[_NOISE] < 0.3:
        gen = torch.Generator(device=image.device).manual_seed((seed + 1) % 2**63)
        noise = torch.randn(image.shape, generator=gen, device=image.device, dtype=image.dtype)
        image = image + 0.05 * noise
    return image, label


def augment(
    image: torch.Tensor,
    label: torch.Tensor,
    seeds: Sequence[int],
    settings: Mapping[str, Any],
) -> tuple[torch.Tensor, torch.Tensor]:
    """Augment a batch on its device, each sample drawn from its own seed.

    ``image`` and ``label`` are (B, 1, X, Y, Z), ``seeds`` B integers, ``settings`` the
    ``training.augmentation`` config (every key; defaults in ``config.yaml``): with
    probability ``spatial_probability`` a rotation up to ``rotation_deg`` about each axis and an
    isotropic zoom drawn from ``scaling`` (2D samples, Z = 1: about the slice normal and
    in-plane only, :func:`augment_sample`); a flip per axis with probability 0.5; with
    probability ``gamma_probability`` a gamma drawn from ``gamma``; intensity × U(0.9, 1.1)
    + U(-0.1, 0.1); with probability 0.3 Gaussian noise (σ 0.05).
    """
    pairs = [augment_sample(image[k], label[k], s, settings) for k, s in enumerate(seeds)]
    return torch.stack([p[0] for p in pairs]), torch.stack([p[1] for p in pairs])
