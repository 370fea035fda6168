"""The way back from the preprocessed grid: class probabilities of a network mapped to a label
map on the subject's native grid (the exact inverse of
:func:`cohortseg.preprocessing.prepare.prepare_image` for its geometry), computed only where it can
matter."""

from __future__ import annotations

import functools
import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from cohortseg.core.geometry import undo_reorient
from cohortseg.preprocessing.prepare import Geometry, resize


def restore_labels(probabilities: torch.Tensor, geometry: Geometry) -> np.ndarray:
    """Map class probabilities on the preprocessed grid back to a native uint8 label map.

    The (C, X', Y', Z') probabilities, background outside the crop, are resampled linearly
    to the canonical native grid, reduced by argmax (:func:`restore_canonical_labels`) and
    reoriented to the native voxel order, so the result has exactly ``geometry.native_shape``.
    """
    labels = restore_canonical_labels(probabilities, geometry).cpu().numpy()
    return undo_reorient(labels, np.asarray(geometry.orientation))


def restore_map(values: torch.Tensor, geometry: Geometry, outside: float = 0.0) -> np.ndarray:
    """Map a voxel-wise quantity (an uncertainty, say) on the preprocessed grid back to the
    native grid: the (X', Y', Z') ``values``, ``outside`` beyond the body crop, resampled
    linearly to the canonical native grid and reoriented to the native voxel order.

    Returns float32 of exactly ``geometry.native_shape`` (on the host).
    """
    full = torch.full(
        tuple(geometry.resampled_shape), outside, dtype=torch.float32, device=values.device
    )
    full[tuple(slice(a, b) for a, b in geometry.crop)] = values.float()
    canonical = resize(full[None], geometry.canonical_shape, "linear")[0]
    return undo_reorient(canonical.cpu().numpy(), np.asarray(geometry.orientation))


# Boundary voxels interpolated at once by restore_canonical_labels: each takes 8 gathers of
# C float32 values, so 2**20 of them need some 16 MiB per class at a time.
RESTORE_CHUNK_VOXELS = 2**20


MIXED = 128  # flag bit of a uint8 class: the stencil's source voxels disagree


DENSE_FRACTION = 0.25  # above this share of boundary voxels, interpolate all of them


def restore_canonical_labels(
    probabilities: torch.Tensor,
    geometry: Geometry,
    chunk_voxels: int = RESTORE_CHUNK_VOXELS,
) -> torch.Tensor:
    """Class probabilities on the preprocessed grid → uint8 labels on the canonical native grid.

    The same as padding the (C, X', Y', Z') probabilities to the uncropped resampled grid with
    background (class 0 certain), resizing them to ``geometry.canonical_shape`` by trilinear
    interpolation (``align_corners=False``) and taking the argmax over classes, but computed
    only where it can matter, on the device of ``probabilities``:

    - native voxels whose interpolation stencil lies outside the crop are background;
    - where the argmax of all (up to 8) source voxels of a stencil is the same class, it is the
      argmax of any convex combination of them, so the class is copied (a uint8 operation);
    - only the remaining voxels, along class boundaries, are interpolated, ``chunk_voxels`` at
      a time; when they are more than ``DENSE_FRACTION`` of all (an untrained network), every
      voxel is, separably per axis, in slabs of about ``chunk_voxels``.

    Returns
    -------
    torch.Tensor
        (X, Y, Z) uint8 labels of ``geometry.canonical_shape`` in RAS voxel order.
    """
    if probabilities.shape[0] > MIXED:
        raise ValueError(f"at most {MIXED} classes, got {probabilities.shape[0]}")
    device = probabilities.device
    labels = torch.zeros(tuple(geometry.canonical_shape), dtype=torch.uint8, device=device)
    grids = zip(geometry.canonical_shape, geometry.resampled_shape, geometry.crop, strict=True)
    taps = [_linear_taps(n_out, n_in, crop) for n_out, n_in, crop in grids]
    if any(t.stop <= t.start for t in taps):
        return labels
    # argmax on the source voxels the stencils read: the crop plus background around it
    classes = torch.zeros(
        tuple(t.src_stop - t.src_start for t in taps), dtype=torch.uint8, device=device
    )
    in_classes, in_probabilities = [], []
    for tap, (a, b) in zip(taps, geometry.crop, strict=True):
        lo, hi = max(tap.src_start, a), min(tap.src_stop, b)
        in_classes.append(slice(lo - tap.src_start, hi - tap.src_start))
        in_probabilities.append(slice(lo - a, hi - a))
    inside = probabilities[(slice(None), *in_probabilities)]
    classes[tuple(in_classes)] = _argmax_classes(inside)
    # separably per axis: the class of the stencil's first voxel, with the MIXED bit set where
    # the stencil's voxels disagree
    for axis, tap in enumerate(taps):
        if not tap.identity:
            first, second = tap.indices(device, relative=True)
            a, b = classes.index_select(axis, first), classes.index_select(axis, second)
            classes = a.bitwise_or_((a != b).to(torch.uint8).mul_(MIXED))
    mixed = classes >= MIXED
    box = labels[tuple(slice(t.start, t.stop) for t in taps)]
    box.copy_(classes.bitwise_and_(MIXED - 1))
    if int(mixed.sum()) > DENSE_FRACTION * mixed.numel():
        # boundaries everywhere (an untrained network, say): interpolating every voxel
        # separably is cheaper than voxel by voxel
        rows = max(1, chunk_voxels // max(1, box[0].numel()))
        for j0 in range(taps[0].start, taps[0].stop, rows):
            slab = [taps[0].slice(j0, min(j0 + rows, taps[0].stop)), taps[1], taps[2]]
            block = _background_block(probabilities, geometry.crop, slab)
            for axis, tap in enumerate(slab):
                block = tap.interpolate(block, axis + 1)
            box[j0 - taps[0].start : slab[0].stop - taps[0].start] = _argmax_classes(block)
        return labels
    boundary = torch.nonzero(mixed)
    for start in range(0, boundary.shape[0], chunk_voxels):
        points = boundary[start : start + chunk_voxels]
        box[points[:, 0], points[:, 1], points[:, 2]] = _interpolated_argmax(
            probabilities, geometry.crop, taps, points
        )
    return labels


@dataclass
class _Taps:
    """Linear interpolation along one axis for the output voxels ``start:stop``: output voxel
    j reads source voxels ``i0[j - start]`` and ``i1[j - start]`` (indices on the uncropped
    resampled grid, all in ``src_start:src_stop``) with weights 1 - w1 and w1. ``identity``
    means output voxel j is source voxel j."""

    start: int
    stop: int
    src_start: int
    src_stop: int
    i0: np.ndarray
    i1: np.ndarray
    w1: np.ndarray
    identity: bool

    def indices(self, device: torch.device, relative: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """``i0`` and ``i1`` as tensors, minus ``src_start`` if ``relative``."""
        offset = self.src_start if relative else 0
        return (
            torch.as_tensor(self.i0 - offset, device=device),
            torch.as_tensor(self.i1 - offset, device=device),
        )

    def slice(self, start: int, stop: int) -> _Taps:
        """The taps of output voxels ``start:stop`` (within this one's)."""
        k0, k1 = start - self.start, stop - self.start
        i0, i1, w1 = self.i0[k0:k1], self.i1[k0:k1], self.w1[k0:k1]
        return _Taps(start, stop, int(i0[0]), int(i1[-1]) + 1, i0, i1, w1, self.identity)

    def interpolate(self, block: torch.Tensor, dim: int) -> torch.Tensor:
        """Interpolate ``block``, covering source voxels ``src_start:src_stop`` along ``dim``,
        to the output voxels."""
        if self.identity:
            return block
        first, second = self.indices(block.device, relative=True)
        view = [1] * block.ndim
        view[dim] = -1
        w1 = torch.as_tensor(self.w1, dtype=block.dtype, device=block.device).view(view)
        return block.index_select(dim, first).lerp_(block.index_select(dim, second), w1)


def _linear_taps(n_out: int, n_in: int, crop: Sequence[int]) -> _Taps:
    """Taps of ``torch.nn.functional.interpolate(mode="linear", align_corners=False)`` from
    ``n_in`` to ``n_out`` voxels, for the output voxels that read the crop ``(start, stop)`` of
    the source."""
    a, b = int(crop[0]), int(crop[1])
    if n_out == n_in:
        j = np.arange(a, b)
        return _Taps(a, b, a, b, j, j, np.zeros(b - a), identity=True)
    # source coordinate of output voxel j: (j + 0.5) * n_in / n_out - 0.5, clamped at 0
    src = np.maximum((np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5, 0.0)
    i0 = np.minimum(np.floor(src).astype(np.int64), n_in - 1)
    i1 = np.minimum(i0 + 1, n_in - 1)
    w1 = src - i0
    touches = np.flatnonzero((i1 >= a) & (i0 < b))
    if touches.size == 0:
        return _Taps(0, 0, 0, 0, i0[:0], i1[:0], w1[:0], identity=False)
    k0, k1 = int(touches[0]), int(touches[-1]) + 1
    return _Taps(k0, k1, int(i0[k0]), int(i1[k1 - 1]) + 1, i0[k0:k1], i1[k0:k1], w1[k0:k1], False)


def _interpolated_argmax(
    probabilities: torch.Tensor,
    crop: Sequence[Sequence[int]],
    taps: Sequence[_Taps],
    points: torch.Tensor,
) -> torch.Tensor:
    """Argmax over classes of the trilinearly interpolated probabilities at output voxels
    ``points`` (N, 3), relative to the start of ``taps``; source voxels outside the crop are
    background. Returns (N,) uint8."""
    device = probabilities.device
    corners = []  # per axis: ((source index, weight), ...) of the points
    for axis, tap in enumerate(taps):
        j = points[:, axis]
        i0, i1 = (i[j] for i in tap.indices(device, relative=False))
        if tap.identity:
            corners.append([(i0, None)])
            continue
        w1 = torch.as_tensor(tap.w1, dtype=probabilities.dtype, device=device)[j]
        corners.append([(i0, 1 - w1), (i1, w1)])
    background = torch.zeros(probabilities.shape[0], 1, dtype=probabilities.dtype, device=device)
    background[0] = 1.0
    total = torch.zeros(
        (probabilities.shape[0], points.shape[0]), dtype=probabilities.dtype, device=device
    )
    for (x, wx), (y, wy), (z, wz) in itertools.product(*corners):
        inside = torch.ones_like(x, dtype=torch.bool)
        index = []
        for i, (a, b) in zip((x, y, z), crop, strict=True):
            inside &= (i >= a) & (i < b)
            index.append(i.clamp(a, b - 1) - a)
        values = torch.where(inside, probabilities[:, index[0], index[1], index[2]], background)
        weight = [w for w in (wx, wy, wz) if w is not None]
        if weight:
            values = values * functools.reduce(torch.mul, weight)
        total += values
    return _argmax_classes(total)


def _argmax_classes(values: torch.Tensor) -> torch.Tensor:
    """``torch.argmax(values, dim=0)`` as uint8 (the first class on ties), by one comparison per
    class: much faster on the CPU than an argmax over the outer dimension."""
    best, classes = values[0].clone(), torch.zeros(values.shape[1:], dtype=torch.uint8)
    classes = classes.to(values.device)
    for c in range(1, values.shape[0]):
        higher = values[c] > best
        classes.masked_fill_(higher, c)
        best = torch.maximum(best, values[c])
    return classes


def _background_block(
    probabilities: torch.Tensor, crop: Sequence[Sequence[int]], taps: Sequence[_Taps]
) -> torch.Tensor:
    """The source voxels ``taps[k].src_start:src_stop`` per axis of the uncropped resampled
    grid: ``probabilities`` inside the crop, background (class 0 certain) outside."""
    src = [(t.src_start, t.src_stop) for t in taps]
    shape = (probabilities.shape[0], *(b - a for a, b in src))
    block = torch.zeros(shape, dtype=probabilities.dtype, device=probabilities.device)
    block[0] = 1.0
    in_block, in_probabilities = [], []
    for (s0, s1), (c0, c1) in zip(src, crop, strict=True):
        lo, hi = max(s0, c0), min(s1, c1)
        in_block.append(slice(lo - s0, hi - s0))
        in_probabilities.append(slice(lo - c0, hi - c0))
    block[(slice(None), *in_block)] = probabilities[(slice(None), *in_probabilities)]
    return block
