"""nnU-Net v2's configurations of a dataset, from its fingerprint: the full-resolution target
spacing (median, with nnU-Net's rule for anisotropic data), and the ``2d``, ``3d_fullres`` and
``3d_lowres`` configurations it would plan (spacing, median shape, patch, batch and network of
each, within a memory budget: :mod:`cohortseg.networks.budget`).

Axes. cohortseg's fingerprint is in canonical (x, y, z) order; nnU-Net reads NIfTI through
SimpleITK, whose arrays are (z, y, x), and then moves the coarsest axis first
(``transpose_forward``). The rules here run in that same order, so that where nnU-Net breaks a
tie by position (isotropic grids, equal ratios) cohortseg breaks it alike; results come back
in canonical order.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from cohortseg.core.errors import CohortsegError
from cohortseg.networks.budget import budget_configuration

ANISOTROPY_RATIO = 3.0  # nnU-Net's ANISO_THRESHOLD


LOWRES_COVERAGE = 0.25  # plan 3d_lowres when the 3d_fullres patch covers less of the median


LOWRES_SPACING_STEP = 1.03  # nnU-Net 2.8.1's spacing_increase_factor (1.01 before)


LOWRES_MIN_REDUCTION = 2.0  # drop 3d_lowres unless its median has half the voxels or fewer


SPACING_DECIMALS = 6  # target spacings are rounded to 1e-6 mm (keeps nnU-Net's +1e-5 clamp)


CONFIGURATIONS = ("2d", "3d_fullres", "3d_lowres")


def target_spacing(
    spacings_mm: Sequence[Sequence[float]], shapes: Sequence[Sequence[int]]
) -> list[float]:
    """The full-resolution target spacing, by nnU-Net's ``determine_fullres_target_spacing``.

    The median spacing per axis; for anisotropic data, where the coarsest axis is more than 3×
    the others' largest spacing (``has_aniso_spacing``) and has fewer than a third of the
    voxels of the others' smallest median size (``has_aniso_voxels``), that axis takes the 10th
    percentile of its spacings instead, clamped to no finer than the other axes' largest
    spacing (+ 1e-5 mm), so that thick slices are not interpolated from too few voxels.

    Parameters
    ----------
    spacings_mm
        Each subject's spacing (x, y, z), mm.
    shapes
        Each subject's shape (x, y, z), voxels.

    Returns
    -------
    list of float
        (x, y, z), mm, rounded to 1e-6 mm.
    """
    spacings = np.asarray(spacings_mm, float)
    target = np.percentile(spacings, 50, axis=0)
    median_size = np.percentile(np.asarray(shapes, float), 50, axis=0)
    worst = int(np.argmax(target[::-1]))  # in nnU-Net's (z, y, x) order: the first of equals
    worst = len(target) - 1 - worst
    others = [a for a in range(len(target)) if a != worst]
    has_aniso_spacing = target[worst] > ANISOTROPY_RATIO * max(target[a] for a in others)
    has_aniso_voxels = median_size[worst] * ANISOTROPY_RATIO < min(median_size[a] for a in others)
    if has_aniso_spacing and has_aniso_voxels:
        coarse = float(np.percentile(spacings[:, worst], 10))
        finest_allowed = max(float(target[a]) for a in others)
        if coarse < finest_allowed:
            coarse = max(finest_allowed, coarse) + 1e-5
        target[worst] = coarse
    return [round(float(t), SPACING_DECIMALS) for t in target]


def nnunet_order(target_spacing_mm: Sequence[float], slice_axis: int | None = None) -> list[int]:
    """The canonical axis of each of nnU-Net's axes: SimpleITK's (z, y, x) with the coarsest
    spacing moved first (``transpose_forward``; the first of equals). ``slice_axis`` (a 2D
    cohort's axis of one voxel) goes first whatever its spacing: cohortseg plans one-slice
    images in-plane always (nnU-Net does when their slice spacing is the coarsest)."""
    sitk = [2, 1, 0]
    if slice_axis is None:
        first = sitk[int(np.argmax([target_spacing_mm[a] for a in sitk]))]
    else:
        first = slice_axis
    return [first, *[a for a in sitk if a != first]]


def resampled_median_shape(
    spacings_mm: Sequence[Sequence[float]],
    shapes: Sequence[Sequence[int]],
    target_spacing_mm: Sequence[float],
) -> list[float]:
    """The median over subjects of each shape resampled to ``target_spacing_mm`` and rounded
    per subject (nnU-Net's ``compute_new_shape``; an axis of one voxel stays one), voxels
    (x, y, z); a median of an even count may end in .5."""
    resampled = [
        [
            1 if n == 1 else int(round(s / t * n))
            for n, s, t in zip(shape, sp, target_spacing_mm, strict=True)
        ]
        for shape, sp in zip(shapes, spacings_mm, strict=True)
    ]
    return [float(m) for m in np.median(np.asarray(resampled, float), axis=0)]


def _configuration(
    order: Sequence[int],
    spacing_t: np.ndarray,
    median_t: Sequence[float],
    dataset_voxels: float,
    n_classes: int,
    budget_gb: float,
    max_patch_size: Sequence[int] | None,
) -> dict:
    """One configuration on nnU-Net's axes ``order`` (canonical axis of each), returned on
    canonical axes: an axis left out of ``order`` (2D's slice axis) gets 1 voxel, stride 1 and
    kernel 1."""
    cap = None if max_patch_size is None else [max_patch_size[a] for a in order]
    net = budget_configuration(
        [float(s) for s in spacing_t], list(median_t), dataset_voxels, n_classes, budget_gb, cap
    )

    def canonical(values: Sequence, fill):
        out = [fill] * 3
        for i, a in enumerate(order):
            out[a] = values[i]
        return out

    return {
        "patch_size": [int(p) for p in canonical(net["patch_size"], 1)],
        "batch_size": int(net["batch_size"]),
        "strides": [canonical(s, 1) for s in net["strides"]],
        "kernel_size": [canonical(k, 1) for k in net["kernel_size"]],
        "filters": list(net["filters"]),
        "estimate": int(net["estimate"]),
    }


def _lowres(
    order: Sequence[int],
    fullres_t: np.ndarray,
    median_t: np.ndarray,
    fullres_patch_voxels: float,
    n_subjects: int,
    n_classes: int,
    budget_gb: float,
    max_patch_size: Sequence[int] | None,
) -> tuple[np.ndarray, list[int], dict] | None:
    """nnU-Net's 3d_lowres search, on its axes: while the patch covers less than 25 % of the
    median shape, coarsen the spacing by 3 % (only the axes finer than half the coarsest,
    until none is) and plan again; dropped when the median shape shrinks by less than 2×.

    Returns
    -------
    (spacing, median shape, configuration) or None
        The spacing (mm) and the rounded median shape (voxels) on nnU-Net's axes, and the
        configuration on canonical axes.
    """
    spacing = fullres_t.copy()
    median_voxels = float(np.prod(median_t, dtype=np.float64))
    patch_voxels = fullres_patch_voxels
    found, rounded = None, []
    while patch_voxels / median_voxels < LOWRES_COVERAGE:
        fine = spacing.max() / spacing > 2
        if np.any(fine):
            spacing[fine] *= LOWRES_SPACING_STEP
        else:
            spacing *= LOWRES_SPACING_STEP
        shape = fullres_t / spacing * median_t
        median_voxels = float(np.prod(shape, dtype=np.float64))
        rounded = [round(float(n)) for n in shape]
        found = _configuration(
            order,
            spacing,
            rounded,
            median_voxels * n_subjects,
            n_classes,
            budget_gb,
            max_patch_size,
        )
        patch_voxels = float(np.prod(found["patch_size"], dtype=np.float64))
    if found is None or np.prod(median_t, dtype=np.float64) / median_voxels < LOWRES_MIN_REDUCTION:
        return None
    return spacing, rounded, found


def plan_configurations(
    spacings_mm: Sequence[Sequence[float]],
    shapes: Sequence[Sequence[int]],
    n_classes: int,
    budget_gb: float,
    target_spacing_mm: Sequence[float] | None = None,
    max_patch_size: Sequence[int] | None = None,
) -> dict[str, dict]:
    """The configurations nnU-Net's ``ExperimentPlanner.plan_experiment`` makes of a dataset.

    ``2d`` always (in the plane of nnU-Net's two finer axes); ``3d_fullres`` unless every image
    is one slice; ``3d_lowres`` where the full-resolution patch covers less than 25 % of the
    median shape (nnU-Net then also plans ``3d_cascade_fullres``, its full-resolution stage fed
    the low-resolution prediction, recorded as ``next_stage``).

    Parameters
    ----------
    spacings_mm, shapes
        Each training subject's canonical spacing (mm) and shape (voxels), (x, y, z).
    n_classes
        Output channels, background included.
    budget_gb
        GPU memory in nnU-Net's units (``plan.memory_budget_gb``), GB.
    target_spacing_mm
        A full-resolution spacing that replaces the derived one (nnU-Net's
        ``overwrite_target_spacing``), mm.
    max_patch_size
        An optional cap on each configuration's first patch (x, y, z), voxels.

    Returns
    -------
    dict
        Configuration name → ``target_spacing_mm`` (x, y, z), ``median_shape`` (voxels on that
        grid), ``patch_size``, ``batch_size``, ``strides``, ``kernel_size`` and ``filters``
        per stage, ``estimate`` (nnU-Net's memory estimate of one sample, elements), all on
        canonical axes, and ``batch_dice`` (whether nnU-Net's Dice pools the batch); a 2D
        configuration has 1 voxel along its slice axis.
    """
    fullres = [float(s) for s in (target_spacing_mm or target_spacing(spacings_mm, shapes))]
    median = resampled_median_shape(spacings_mm, shapes, fullres)
    flat = [a for a in range(3) if all(int(shape[a]) == 1 for shape in shapes)]
    order = nnunet_order(fullres, flat[0] if flat else None)
    spacing_t = np.asarray([fullres[a] for a in order])
    median_t = np.asarray([median[a] for a in order])
    dataset_voxels = float(np.prod(median_t, dtype=np.float64) * len(shapes))
    plans = {}
    if median_t[0] != 1:
        full = _configuration(
            order, spacing_t, median_t, dataset_voxels, n_classes, budget_gb, max_patch_size
        )
        plans["3d_fullres"] = {"target_spacing_mm": fullres, "median_shape": median, **full}
        patch_voxels = float(np.prod(full["patch_size"], dtype=np.float64))
        low = _lowres(
            order,
            spacing_t,
            median_t,
            patch_voxels,
            len(shapes),
            n_classes,
            budget_gb,
            max_patch_size,
        )
        if low is not None:
            spacing_low, median_low, config = low
            spacing, shape = [0.0] * 3, [0.0] * 3
            for i, a in enumerate(order):
                spacing[a] = round(float(spacing_low[i]), SPACING_DECIMALS)
                shape[a] = float(median_low[i])
            plans["3d_lowres"] = {
                "target_spacing_mm": spacing,
                "median_shape": shape,
                **config,
                "batch_dice": False,
                "next_stage": "3d_cascade_fullres",
            }
        # nnU-Net's Dice over the whole batch where a low-resolution stage exists, else per
        # sample (its plans' batch_dice)
        plans["3d_fullres"]["batch_dice"] = "3d_lowres" in plans
    in_plane = _configuration(
        order[1:], spacing_t[1:], median_t[1:], dataset_voxels, n_classes, budget_gb, max_patch_size
    )
    median_2d = list(median)
    median_2d[order[0]] = 1.0  # the slices' in-plane median shape
    plans["2d"] = {
        "target_spacing_mm": fullres,
        "median_shape": median_2d,
        **in_plane,
        "batch_dice": True,
    }
    return {name: plans[name] for name in CONFIGURATIONS if name in plans}


def chosen_configuration(requested: str, planned: Mapping[str, Mapping]) -> str:
    """The configuration cohortseg trains: ``requested``, or for ``auto`` ``3d_fullres``
    (``2d`` where no 3D configuration is planned: one-slice images), nnU-Net's default before
    its cross-validation picks among those it planned.

    Raises
    ------
    CohortsegError
        If ``requested`` was not planned for this dataset.
    """
    if requested == "auto":
        return "3d_fullres" if "3d_fullres" in planned else "2d"
    if requested not in planned:
        raise CohortsegError(
            f"plan.configuration: {requested} is not planned for this cohort (nnU-Net's rules"
            f" plan {', '.join(planned)}; 3d_lowres only where the 3d_fullres patch covers less"
            " than 25 % of the median shape): choose one of those, or auto"
        )
    return requested
