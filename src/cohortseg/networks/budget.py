"""The patch and batch size of nnU-Net's U-Net within a memory budget, by nnU-Net v2's planner
(``ExperimentPlanner.get_plans_for_configuration``).

The patch starts at the median shape's aspect in millimetres (as large as 256³ voxels, or 2048²
in-plane, then clipped to the median shape); while the network's memory estimate
(:func:`cohortseg.networks.topology.feature_map_size`, for a batch of 2) exceeds the budget, the
axis largest relative to the median shape shrinks by one step of the network's divisibility,
and the topology is configured again. The batch size then fills what is left of the budget, at
least 2 and at most what covers 5 % of the dataset's voxels.

Every function here works on nnU-Net's axes (2 or 3, without a slice axis of one voxel): the
caller orders and maps them (:mod:`cohortseg.preprocessing.configurations`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from cohortseg.networks.topology import (
    MAX_FEATURES,
    MAX_FEATURES_2D,
    divisor_of,
    feature_map_size,
    padded_patch_size,
    pool_and_conv_props,
    stage_features,
)

# nnU-Net's reference: an estimate of this many elements fits REFERENCE_GB of GPU memory with a
# batch of REFERENCE_BATCH (its planner's UNet_reference_val_3d / _2d, set to reproduce v1)
REFERENCE_ELEMENTS = {3: 560_000_000, 2: 85_000_000}


REFERENCE_GB = 8.0  # nnU-Net's UNet_reference_val_corresp_GB (and its default target)


REFERENCE_BATCH = {3: 2, 2: 12}  # nnU-Net's UNet_reference_val_corresp_bs_3d / _2d


MIN_BATCH_SIZE = 2  # nnU-Net's UNet_min_batch_size


MAX_DATASET_COVERED = 0.05  # one batch sees at most this share of the dataset's voxels


INITIAL_PATCH_EDGE = {3: 256, 2: 2048}  # the first patch holds as many voxels as this edge's cube


def reference_elements(budget_gb: float, dims: int) -> float:
    """The estimate (elements) that a budget allows for a batch of nnU-Net's reference size:
    nnU-Net's reference scaled by ``budget_gb / 8``."""
    return REFERENCE_ELEMENTS[dims] * (float(budget_gb) / REFERENCE_GB)


def initial_patch_size(
    spacing_mm: Sequence[float],
    median_shape: Sequence[float],
    max_patch_size: Sequence[int] | None = None,
) -> list[float]:
    """nnU-Net's first patch: the aspect of the grid in millimetres (``1 / spacing``) scaled to
    256³ voxels (2048² in 2D), rounded, then clipped to the median shape (and to
    ``max_patch_size``, cohortseg's optional cap), voxels per axis."""
    dims = len(spacing_mm)
    inverse = [1.0 / float(s) for s in spacing_mm]
    scale = (INITIAL_PATCH_EDGE[dims] ** dims / math.prod(inverse)) ** (1.0 / dims)
    patch = [min(round(i * scale), m) for i, m in zip(inverse, median_shape, strict=True)]
    if max_patch_size is not None:
        patch = [min(p, int(c)) for p, c in zip(patch, max_patch_size, strict=True)]
    return patch


def _network(spacing_mm: Sequence[float], patch: Sequence[float], n_classes: int) -> dict:
    """Strides, kernels and filters for a patch, the patch padded to their divisibility, and the
    memory estimate of one sample."""
    strides, kernels = pool_and_conv_props(spacing_mm, patch)
    cap = MAX_FEATURES_2D if len(spacing_mm) == 2 else MAX_FEATURES
    filters = stage_features(len(strides), cap=cap)
    padded = padded_patch_size(patch, divisor_of(strides))
    return {
        "patch_size": padded,
        "strides": strides,
        "kernel_size": kernels,
        "filters": filters,
        "estimate": feature_map_size(padded, strides, filters, n_classes),
    }


def _axis_to_reduce(patch: Sequence[int], median_shape: Sequence[float]) -> int:
    """The axis largest relative to the median shape; of equals the last (nnU-Net's
    ``np.argsort(...)[-1]``, stable on three values)."""
    ratios = [p / m for p, m in zip(patch, median_shape, strict=True)]
    return max(range(len(ratios)), key=lambda a: (ratios[a], a))


def fit_patch(
    spacing_mm: Sequence[float],
    median_shape: Sequence[float],
    n_classes: int,
    budget_gb: float,
    initial: Sequence[float],
) -> dict:
    """Shrink ``initial`` until nnU-Net's U-Net for it fits ``budget_gb`` with a batch of 2.

    Each step takes the axis largest relative to ``median_shape`` down by its divisibility
    (recomputed for the smaller patch first, so that no valid size is skipped, as nnU-Net
    does), then configures the topology again.

    Returns
    -------
    dict
        ``patch_size`` (voxels), ``strides``, ``kernel_size``, ``filters`` and ``estimate``
        (elements for one sample).
    """
    dims = len(spacing_mm)
    reference = reference_elements(budget_gb, dims)
    net = _network(spacing_mm, initial, n_classes)
    while net["estimate"] / REFERENCE_BATCH[dims] * 2 > reference:
        patch = list(net["patch_size"])
        axis = _axis_to_reduce(patch, median_shape)
        smaller = list(patch)
        smaller[axis] -= divisor_of(net["strides"])[axis]
        if smaller[axis] < 1:
            break  # nothing left to take away: the budget is below one minimal patch
        patch[axis] -= divisor_of(pool_and_conv_props(spacing_mm, smaller)[0])[axis]
        net = _network(spacing_mm, patch, n_classes)
    return net


def batch_size(
    estimate: int,
    patch_size: Sequence[int],
    budget_gb: float,
    dataset_voxels: float,
    dims: int,
) -> int:
    """nnU-Net's batch size: what the budget holds beside the estimate (``reference / estimate
    × reference batch``, rounded), at most the batches covering 5 % of ``dataset_voxels`` (the
    median shape's voxels × training subjects), at least 2."""
    fits = round(reference_elements(budget_gb, dims) / estimate * REFERENCE_BATCH[dims])
    covering = round(dataset_voxels * MAX_DATASET_COVERED / math.prod(float(p) for p in patch_size))
    return max(min(fits, covering), MIN_BATCH_SIZE)


def budget_configuration(
    spacing_mm: Sequence[float],
    median_shape: Sequence[float],
    dataset_voxels: float,
    n_classes: int,
    budget_gb: float,
    max_patch_size: Sequence[int] | None = None,
) -> dict:
    """One nnU-Net configuration's patch, network and batch for a grid and its median shape.

    Parameters
    ----------
    spacing_mm
        The configuration's target spacing (2 or 3 axes, nnU-Net's order), mm.
    median_shape
        The median training shape on that grid, voxels.
    dataset_voxels
        Voxels of the dataset at full resolution (median shape × training subjects).
    n_classes
        Output channels, background included.
    budget_gb
        GPU memory in nnU-Net's units (its estimate of 560 M elements ↔ 8 GB), GB.
    max_patch_size
        An optional cap on the first patch, voxels.

    Returns
    -------
    dict
        ``patch_size``, ``batch_size``, ``strides``, ``kernel_size``, ``filters`` and
        ``estimate`` (elements for one sample).
    """
    initial = initial_patch_size(spacing_mm, median_shape, max_patch_size)
    net = fit_patch(spacing_mm, median_shape, n_classes, budget_gb, initial)
    dims = len(spacing_mm)
    net["batch_size"] = batch_size(
        net["estimate"], net["patch_size"], budget_gb, dataset_voxels, dims
    )
    return net
