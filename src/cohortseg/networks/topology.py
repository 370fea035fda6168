"""The network configured from the plan (``model.name: auto``), by nnU-Net v2's rules: stages,
per-stage kernel sizes and strides from the target spacing and the patch size, features
doubling from 32 up to 320 (512 in-plane), instance norm, leaky ReLU and deep supervision, as
arguments of MONAI's ``DynUNet``; and nnU-Net's estimate of its memory (the feature maps it
holds per sample), which the plan's memory budget is measured in."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

MIN_FEATURE_MAP_SIZE = 4  # voxels per axis at the bottleneck, at least (nnU-Net: 4)


BASE_FEATURES = 32  # features of the first stage (nnU-Net: 32)


MAX_FEATURES = 320  # features of any stage, at most (nnU-Net, 3D: 320)


MAX_FEATURES_2D = 512  # features of any stage of an in-plane network, at most (nnU-Net, 2D: 512)


CONVS_PER_STAGE = 2  # convolutions per encoder and per decoder stage (nnU-Net: 2)


def pool_and_conv_props(
    spacing_mm: Sequence[float],
    patch_size: Sequence[float],
    min_feature_map_size: int = MIN_FEATURE_MAP_SIZE,
) -> tuple[list[list[int]], list[list[int]]]:
    """Per-stage strides and kernel sizes of a U-Net for a patch on a grid of ``spacing_mm``,
    by nnU-Net's ``get_pool_and_conv_props``.

    Each stage halves every axis that is still at least twice ``min_feature_map_size`` voxels
    long and whose current spacing is within a factor 2 of the finest such axis (so coarse
    axes of anisotropic grids are pooled only once the others have caught up); an axis gets
    kernel 3 once its spacing is within a factor 2 of the finest, 1 before (in-plane
    convolutions first on thick slices). The bottleneck has kernel 3 on every axis. An axis of
    one voxel (the slice axis of a 2D plan) keeps kernel 1 and stride 1 at every stage.

    Parameters
    ----------
    spacing_mm
        Grid spacing per axis (2 or 3 axes), mm.
    patch_size
        Patch per axis, voxels (a median shape may make it fractional, as in nnU-Net).

    Returns
    -------
    strides, kernels
        One list per stage, an entry per axis; the first stage's stride is all ones.
    """
    dims = len(spacing_mm)
    spacing = [float(s) for s in spacing_mm]
    size = [float(n) for n in patch_size]
    strides: list[list[int]] = [[1] * dims]
    kernels: list[list[int]] = []
    kernel = [1] * dims
    spread = [a for a in range(dims) if patch_size[a] > 1]  # not the slice axis of a 2D plan
    while True:
        poolable = [a for a in range(dims) if size[a] >= 2 * min_feature_map_size]
        if not poolable:
            break
        finest = min(spacing[a] for a in poolable)
        poolable = [a for a in poolable if spacing[a] / finest < 2]
        if len(poolable) == 1 and size[poolable[0]] < 3 * min_feature_map_size:
            break
        kernel = [
            3 if a in spread and (k == 3 or spacing[a] / min(spacing[b] for b in spread) < 2) else 1
            for a, k in enumerate(kernel)
        ]
        stride = [2 if a in poolable else 1 for a in range(dims)]
        for a in poolable:
            spacing[a] *= 2
            size[a] = math.ceil(size[a] / 2)
        strides.append(stride)
        kernels.append(list(kernel))
    kernels.append([3 if n > 1 else 1 for n in patch_size])
    return strides, kernels


def stage_features(n_stages: int, base: int = BASE_FEATURES, cap: int = MAX_FEATURES) -> list[int]:
    """Features per stage: ``base`` doubling per stage, at most ``cap`` (32, 64, … 320)."""
    return [min(base * 2**i, cap) for i in range(n_stages)]


def divisor_of(strides: Sequence[Sequence[int]]) -> list[int]:
    """Total downsampling per axis: what a patch's size must be a multiple of."""
    return [math.prod(int(s[a]) for s in strides) for a in range(len(strides[0]))]


def padded_patch_size(patch_size: Sequence[float], divisor: Sequence[int]) -> list[int]:
    """``patch_size`` rounded up to a multiple of ``divisor`` per axis (nnU-Net's
    ``pad_shape``)."""
    return [int(math.ceil(p / d) * d) for p, d in zip(patch_size, divisor, strict=True)]


def deep_supervision_heads(n_stages: int) -> int:
    """Extra outputs below full resolution trained with the main one: nnU-Net weights every
    decoder stage but the lowest, i.e. ``n_stages - 3`` heads besides the main output (at
    least one where the network has three stages or more; none with two)."""
    return max(n_stages - 3, 1) if n_stages >= 3 else 0


def auto_network(spacing_mm: Sequence[float], patch_size: Sequence[float]) -> dict:
    """The topology of ``model.name: auto`` for a plan: saved in the plan as ``network``.

    Parameters
    ----------
    spacing_mm
        The plan's target spacing (x, y, z), mm.
    patch_size
        The patch before rounding (x, y, z), voxels; an axis of one voxel makes the network
        in-plane (kernel 1 and stride 1 along it, up to 512 features as nnU-Net's 2D U-Net).

    Returns
    -------
    dict
        ``kernel_size``, ``strides`` and ``filters`` per stage, ``deep_supr_num`` and
        ``patch_size`` (the patch rounded up to a multiple of the total stride, voxels).
    """
    strides, kernels = pool_and_conv_props(spacing_mm, patch_size)
    cap = MAX_FEATURES_2D if any(int(n) == 1 for n in patch_size) else MAX_FEATURES
    padded = padded_patch_size(patch_size, divisor_of(strides))
    return unet_topology(strides, kernels, stage_features(len(strides), cap=cap), padded)


def unet_topology(
    strides: Sequence[Sequence[int]],
    kernel_size: Sequence[Sequence[int]],
    filters: Sequence[int],
    patch_size: Sequence[int],
) -> dict:
    """The plan's ``network`` for given stages (as :func:`auto_network` returns it): nnU-Net's
    instance norm, leaky ReLU and deep-supervision heads (:func:`deep_supervision_heads`)
    around ``strides``, ``kernel_size`` and ``filters`` per stage; ``patch_size`` (voxels) is
    kept as given (a multiple of the total stride)."""
    return {
        "name": "DynUNet",
        "kernel_size": [[int(k) for k in ks] for ks in kernel_size],
        "strides": [[int(s) for s in ss] for ss in strides],
        "filters": [int(f) for f in filters],
        "norm": "instance",
        "activation": "leakyrelu(0.01)",
        "deep_supr_num": deep_supervision_heads(len(strides)),
        "patch_size": [int(p) for p in patch_size],
    }


def feature_map_size(
    patch_size: Sequence[int],
    strides: Sequence[Sequence[int]],
    filters: Sequence[int],
    n_classes: int,
) -> int:
    """nnU-Net's estimate of a U-Net's memory: the feature-map elements one sample's forward
    pass keeps (``PlainConvUNet.compute_conv_feature_map_size``, which its planner compares
    with a budget).

    Each encoder stage holds ``CONVS_PER_STAGE`` maps of its features at its resolution; each
    decoder stage as many, plus its transposed convolution's output, at the resolution of the
    skip it joins; the segmentation output ``n_classes`` maps at full resolution. Sizes are
    divided by each stage's stride and floored, as nnU-Net does.

    Parameters
    ----------
    patch_size
        Patch per axis (divisible by the total stride), voxels.
    strides, filters
        Per stage, as :func:`auto_network` gives them.
    n_classes
        Output channels, background included.

    Returns
    -------
    int
        Elements (voxels × features) for one sample.
    """
    sizes, size = [], [int(n) for n in patch_size]
    for stride in strides:
        size = [n // int(s) for n, s in zip(size, stride, strict=True)]
        sizes.append(math.prod(size))
    stages = list(zip(filters, sizes, strict=True))
    encoder = sum(CONVS_PER_STAGE * f * v for f, v in stages)
    decoder = sum((CONVS_PER_STAGE + 1) * f * v for f, v in stages[:-1])  # no bottleneck
    return int(encoder + decoder + n_classes * sizes[0])


def dynunet_kwargs(network: Mapping) -> dict:
    """``DynUNet`` constructor arguments (besides the dims and channels) for a plan's
    ``network`` (:func:`auto_network`)."""
    heads = int(network["deep_supr_num"])
    return {
        "kernel_size": [list(k) for k in network["kernel_size"]],
        "strides": [list(s) for s in network["strides"]],
        "upsample_kernel_size": [list(s) for s in network["strides"][1:]],
        "filters": list(network["filters"]),
        "norm_name": ["INSTANCE", {"affine": True}],
        "act_name": ["LEAKYRELU", {"inplace": True, "negative_slope": 0.01}],
        "deep_supervision": heads > 0,
        "deep_supr_num": max(heads, 1),
        "res_block": False,
    }
