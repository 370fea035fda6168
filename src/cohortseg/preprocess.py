"""Preprocessing shared by training and inference: canonical orientation, resampling to the
plan's spacing, body crop and intensity normalisation, and the exact inverse for predictions."""

from __future__ import annotations

import functools
import itertools
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

import nibabel.orientations as nio
import numpy as np
import torch
import torch.nn.functional as F

CANONICAL = ("R", "A", "S")


@dataclass
class Geometry:
    """Everything needed to map a prediction on the preprocessed grid back to the native grid.

    Attributes
    ----------
    native_shape
        (X, Y, Z) shape of the input image, voxels.
    native_affine
        Its (4, 4) voxel-to-world matrix, mm.
    orientation
        nibabel orientation transform from native to canonical (RAS) axis order and direction.
    canonical_shape
        Shape after reorientation, voxels.
    resampled_shape
        Shape after resampling to the plan's spacing, voxels.
    crop
        ((start, stop), …) per axis of the body crop inside the resampled grid, voxels.
    affine
        (4, 4) voxel-to-world matrix of the cropped, resampled grid, mm.
    """

    native_shape: tuple[int, int, int]
    native_affine: list[list[float]]
    orientation: list[list[float]]
    canonical_shape: tuple[int, int, int]
    resampled_shape: tuple[int, int, int]
    crop: tuple[tuple[int, int], ...]
    affine: list[list[float]]

    def to_dict(self) -> dict:
        """Plain-JSON form."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping) -> Geometry:
        """Inverse of :meth:`to_dict`."""
        return cls(
            native_shape=tuple(d["native_shape"]),
            native_affine=d["native_affine"],
            orientation=d["orientation"],
            canonical_shape=tuple(d["canonical_shape"]),
            resampled_shape=tuple(d["resampled_shape"]),
            crop=tuple(tuple(c) for c in d["crop"]),
            affine=d["affine"],
        )


def canonical_transform(affine: np.ndarray) -> np.ndarray:
    """The nibabel orientation transform taking voxel axes of ``affine`` to RAS order."""
    return nio.ornt_transform(nio.io_orientation(affine), nio.axcodes2ornt(CANONICAL))


def reorient(data: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Permute and flip voxel axes so that they run closest to R, A, S (no interpolation).

    Returns the reoriented array, its affine and the orientation transform.
    """
    ornt = canonical_transform(affine)
    out = nio.apply_orientation(data, ornt)
    return np.ascontiguousarray(out), affine @ nio.inv_ornt_aff(ornt, data.shape), ornt


def undo_reorient(data: np.ndarray, ornt: np.ndarray) -> np.ndarray:
    """Inverse of :func:`reorient` on an array: back to the native voxel order."""
    return np.ascontiguousarray(nio.apply_orientation(data, inverse_orientation(ornt)))


def inverse_orientation(ornt: np.ndarray) -> np.ndarray:
    """The orientation transform that undoes ``ornt`` (canonical → native voxel order)."""
    ornt = np.asarray(ornt)
    inv = np.zeros_like(ornt)
    for native_axis, (canon_axis, flip) in enumerate(ornt):
        inv[int(canon_axis)] = (native_axis, flip)
    return inv


def spacing_of(affine: np.ndarray) -> np.ndarray:
    """Voxel spacing (mm) per voxel axis: the norms of the affine's columns."""
    return np.sqrt((np.asarray(affine)[:3, :3] ** 2).sum(axis=0))


def resampled_shape(
    shape: Sequence[int], spacing_mm: Sequence[float], target_mm: Sequence[float]
) -> tuple[int, int, int]:
    """Shape covering the same field of view at the target spacing (at least 1 voxel per axis)."""
    return tuple(
        max(1, int(round(n * s / t))) for n, s, t in zip(shape, spacing_mm, target_mm, strict=True)
    )


def resize_affine(
    affine: np.ndarray, old_shape: Sequence[int], new_shape: Sequence[int]
) -> np.ndarray:
    """Affine of a grid resized from ``old_shape`` to ``new_shape`` over the same field of view.

    Matches ``torch.nn.functional.interpolate(..., align_corners=False)``: new voxel j's centre
    lies at old continuous index (j + 0.5) * old/new - 0.5.
    """
    scale = np.asarray(old_shape, float) / np.asarray(new_shape, float)
    m = np.eye(4)
    m[:3, :3] = np.diag(scale)
    m[:3, 3] = 0.5 * scale - 0.5
    return np.asarray(affine) @ m


def resize(volume: torch.Tensor, shape: Sequence[int], mode: str) -> torch.Tensor:
    """Resize a (C, X, Y, Z) tensor to (C, *shape); ``mode`` is ``linear`` or ``nearest``."""
    if tuple(volume.shape[1:]) == tuple(shape):
        return volume
    if mode == "linear":
        out = F.interpolate(volume[None], size=tuple(shape), mode="trilinear", align_corners=False)
    elif mode == "nearest":
        out = F.interpolate(volume[None].float(), size=tuple(shape), mode="nearest-exact")
        out = out.to(volume.dtype)
    else:
        raise ValueError(f"unknown resize mode {mode!r}")
    return out[0]


def otsu_threshold(values: torch.Tensor, nbins: int = 256) -> float:
    """Otsu's threshold of ``values`` (any shape), as ``skimage.filters.threshold_otsu``
    computes it (``nbins`` equal bins between the minimum and the maximum, the threshold at a
    bin centre), on the tensor's own device. ``values`` must hold at least two distinct values.
    """
    flat = values.reshape(-1).to(torch.float64)
    lo, hi = float(flat.min()), float(flat.max())
    counts = torch.histc(flat, bins=nbins, min=lo, max=hi)
    edges = torch.linspace(lo, hi, nbins + 1, dtype=torch.float64, device=flat.device)
    centres = (edges[:-1] + edges[1:]) / 2
    # class sizes and means for every candidate threshold (the first and last bins are never
    # empty, so there is no division by zero)
    weight1 = torch.cumsum(counts, 0)
    weight2 = torch.cumsum(counts.flip(0), 0).flip(0)
    mean1 = torch.cumsum(counts * centres, 0) / weight1
    mean2 = (torch.cumsum((counts * centres).flip(0), 0) / weight2.flip(0)).flip(0)
    variance12 = weight1[:-1] * weight2[1:] * (mean1[:-1] - mean2[1:]) ** 2
    return float(centres[int(torch.argmax(variance12))])


def body_crop(
    image: np.ndarray | torch.Tensor, margin: int
) -> tuple[tuple[int, int], tuple[int, int], tuple[int, int]]:
    """Bounding box of the body (Otsu threshold on intensities) with ``margin`` voxels around it.

    The threshold is computed on every second voxel per axis; the box on all voxels. A tensor
    stays on its device. Returns ((start, stop),)*3 in voxels; the whole volume if nothing is
    found.
    """
    tensor = torch.as_tensor(image).detach()
    whole = tuple((0, int(n)) for n in tensor.shape)
    sample = tensor[::2, ::2, ::2]
    if sample.numel() < 2 or bool(sample.max() == sample.min()):
        return whole  # type: ignore[return-value]
    mask = tensor.float() > otsu_threshold(sample)
    box = []
    for axis in range(3):
        other = tuple(a for a in range(3) if a != axis)
        hits = torch.nonzero(mask.any(dim=other)).flatten()
        if hits.numel() == 0:
            return whole  # type: ignore[return-value]
        first, last = int(hits[0]), int(hits[-1])
        box.append((max(0, first - margin), min(int(tensor.shape[axis]), last + 1 + margin)))
    return tuple(box)  # type: ignore[return-value]


def normalise(
    image: torch.Tensor, plan: Mapping, crop_mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Normalise intensities as the plan says.

    ``zscore``: subtract the mean and divide by the standard deviation of the image (over
    ``crop_mask`` if given). ``ct``: clip to the dataset's foreground percentiles, then
    subtract the foreground mean and divide by its standard deviation (from the fingerprint).
    """
    method = plan["normalization"]
    if method == "zscore":
        values = image[crop_mask] if crop_mask is not None else image
        mean, std = values.mean(), values.std()
        return (image - mean) / torch.clamp(std, min=1e-6)
    if method == "ct":
        stats = plan["intensity"]
        clipped = image.clamp(stats["percentile_00_5"], stats["percentile_99_5"])
        return (clipped - stats["mean"]) / max(stats["std"], 1e-6)
    raise ValueError(f"unknown normalization {method!r}")


@dataclass
class CanonicalImage:
    """A native image with its voxel axes permuted and flipped to RAS (no interpolation).

    Attributes
    ----------
    data
        (X, Y, Z) intensities in RAS voxel order.
    affine
        (4, 4) voxel-to-world matrix of ``data``, mm.
    orientation
        nibabel orientation transform from the native to the RAS voxel order.
    native_shape
        (X, Y, Z) shape of the native image, voxels.
    native_affine
        (4, 4) voxel-to-world matrix of the native image, mm.
    """

    data: np.ndarray
    affine: np.ndarray
    orientation: np.ndarray
    native_shape: tuple[int, int, int]
    native_affine: np.ndarray


def to_canonical(data: np.ndarray, affine: np.ndarray) -> CanonicalImage:
    """The host-side first step of :func:`prepare_image`: reorient a native (X, Y, Z) image to
    RAS voxel order (a lossless copy)."""
    data = np.asarray(data)
    canon, canon_affine, ornt = reorient(data, affine)
    return CanonicalImage(
        data=canon,
        affine=canon_affine,
        orientation=np.asarray(ornt),
        native_shape=tuple(int(n) for n in data.shape),  # type: ignore[arg-type]
        native_affine=np.asarray(affine, dtype=np.float64),
    )


def prepare_image(
    data: np.ndarray, affine: np.ndarray, plan: Mapping, device: str | torch.device = "cpu"
) -> tuple[torch.Tensor, Geometry]:
    """Take a native (X, Y, Z) image to the plan's grid: reorient, resample, crop, normalise.

    Returns
    -------
    image
        (1, X', Y', Z') float32 tensor on ``device``.
    geometry
        How to map results on that grid back to the native one.
    """
    return prepare_canonical(to_canonical(data, affine), plan, device)


def prepare_canonical(
    image: CanonicalImage, plan: Mapping, device: str | torch.device = "cpu"
) -> tuple[torch.Tensor, Geometry]:
    """The device-side part of :func:`prepare_image`: resample a canonical image to the plan's
    spacing (trilinear), crop it to the body and normalise it, all on ``device``.

    ``image.data`` may be of any numeric dtype (or a CPU tensor, pinned for an asynchronous
    copy); it is copied to ``device`` as it is and converted to float32 there.
    """
    canon_shape = tuple(int(n) for n in image.data.shape)
    target = resampled_shape(canon_shape, spacing_of(image.affine), plan["target_spacing_mm"])
    tensor = torch.as_tensor(image.data).to(device, non_blocking=True)
    tensor = tensor.to(torch.float32)[None]
    tensor = resize(tensor, target, "linear")
    crop = (
        body_crop(tensor[0], int(plan.get("crop_margin", 4)))
        if plan.get("crop", True)
        else (tuple((0, n) for n in target))
    )
    sl = tuple(slice(a, b) for a, b in crop)
    tensor = tensor[(slice(None), *sl)].contiguous()
    tensor = normalise(tensor, plan)
    grid_affine = resize_affine(image.affine, canon_shape, target)
    grid_affine[:3, 3] = grid_affine[:3, 3] + grid_affine[:3, :3] @ np.array([c[0] for c in crop])
    geometry = Geometry(
        native_shape=image.native_shape,
        native_affine=np.asarray(image.native_affine).tolist(),
        orientation=np.asarray(image.orientation).tolist(),
        canonical_shape=canon_shape,  # type: ignore[arg-type]
        resampled_shape=tuple(int(n) for n in target),  # type: ignore[arg-type]
        crop=tuple((int(a), int(b)) for a, b in crop),
        affine=grid_affine.tolist(),
    )
    return tensor, geometry


def prepare_label(
    label: np.ndarray, geometry: Geometry, device: str | torch.device = "cpu"
) -> torch.Tensor:
    """Take a native label map to the grid of ``geometry`` (nearest neighbour).

    Returns a (1, X', Y', Z') uint8 tensor.
    """
    canon = nio.apply_orientation(np.asarray(label), np.asarray(geometry.orientation))
    tensor = torch.as_tensor(np.ascontiguousarray(canon), dtype=torch.uint8, device=device)[None]
    tensor = resize(tensor, geometry.resampled_shape, "nearest")
    sl = tuple(slice(a, b) for a, b in geometry.crop)
    return tensor[(slice(None), *sl)].contiguous()


def restore_labels(probabilities: torch.Tensor, geometry: Geometry) -> np.ndarray:
    """Map class probabilities on the preprocessed grid back to a native uint8 label map.

    The (C, X', Y', Z') probabilities, background outside the crop, are resampled linearly
    to the canonical native grid, reduced by argmax (:func:`restore_canonical_labels`) and
    reoriented to the native voxel order, so the result has exactly ``geometry.native_shape``.
    """
    labels = restore_canonical_labels(probabilities, geometry).cpu().numpy()
    return undo_reorient(labels, np.asarray(geometry.orientation))


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
