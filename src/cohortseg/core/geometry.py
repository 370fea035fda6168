"""Voxel grids and world space: spacing, voxel volume, orientation, resized and cropped grids,
voxel and world boxes, RAS/LPS, and the check that a label lies on its image's grid.

Affines are (4, 4) voxel-to-world matrices of the NIfTI world (scanner RAS+, mm); functions that
change a grid return the new affine with the new array. Only numpy and nibabel: no torch.
"""

from __future__ import annotations

from collections.abc import Sequence

import nibabel.orientations as nio
import numpy as np

from cohortseg.core.errors import InvalidInputError

CANONICAL = ("R", "A", "S")


# World coordinates RAS+ → LPS+ (DICOM, ITK, 3D Slicer's model files): x and y change sign.
RAS_TO_LPS = np.array([-1.0, -1.0, 1.0])


def spacing_of(affine: np.ndarray) -> np.ndarray:
    """Voxel spacing (mm) per voxel axis: the norms of the affine's columns, shape (3,)."""
    return np.sqrt((np.asarray(affine)[:3, :3] ** 2).sum(axis=0))


def voxel_volume_ml(affine: np.ndarray) -> float:
    """Volume of one voxel in mL: |det| of the affine's (3, 3) part (mm³) / 1000."""
    return abs(float(np.linalg.det(np.asarray(affine)[:3, :3]))) / 1000.0


def canonical_transform(affine: np.ndarray) -> np.ndarray:
    """The nibabel orientation transform, shape (3, 2), taking the voxel axes of ``affine`` to
    RAS order."""
    return nio.ornt_transform(nio.io_orientation(affine), nio.axcodes2ornt(CANONICAL))


def reorient(data: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Permute and flip voxel axes so that they run closest to R, A, S (no interpolation).

    Parameters
    ----------
    data
        (X, Y, Z) array in the voxel order of ``affine``.
    affine
        Its (4, 4) voxel-to-world matrix, mm.

    Returns
    -------
    data
        The reoriented (X', Y', Z') array (a permutation of the axes of ``data``).
    affine
        Its (4, 4) voxel-to-world matrix: every voxel keeps its world position.
    orientation
        The (3, 2) nibabel orientation transform applied (for :func:`undo_reorient`).
    """
    ornt = canonical_transform(affine)
    out = nio.apply_orientation(data, ornt)
    return np.ascontiguousarray(out), affine @ nio.inv_ornt_aff(ornt, data.shape), ornt


def inverse_orientation(ornt: np.ndarray) -> np.ndarray:
    """The orientation transform that undoes ``ornt`` (canonical → native voxel order)."""
    ornt = np.asarray(ornt)
    inv = np.zeros_like(ornt)
    for native_axis, (canon_axis, flip) in enumerate(ornt):
        inv[int(canon_axis)] = (native_axis, flip)
    return inv


def undo_reorient(data: np.ndarray, ornt: np.ndarray) -> np.ndarray:
    """Inverse of :func:`reorient` on an array: back to the native voxel order (whose affine is
    the native one, which the caller keeps)."""
    return np.ascontiguousarray(nio.apply_orientation(data, inverse_orientation(ornt)))


def resampled_shape(
    shape: Sequence[int], spacing_mm: Sequence[float], target_mm: Sequence[float]
) -> tuple[int, int, int]:
    """Shape (voxels) covering the same field of view at the target spacing (mm), at least one
    voxel per axis; an axis of one voxel (the slice axis of a 2D image) stays one voxel, since
    a single slice has nothing to interpolate between."""
    return tuple(
        1 if n == 1 else max(1, int(round(n * s / t)))
        for n, s, t in zip(shape, spacing_mm, target_mm, strict=True)
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


def crop_affine(affine: np.ndarray, start: Sequence[int]) -> np.ndarray:
    """Affine of the part of a grid whose first voxel is voxel ``start`` (3 indices) of the
    grid of ``affine``: the same world positions, new voxel indices."""
    out = np.array(affine, dtype=np.float64)
    out[:3, 3] = out[:3, 3] + out[:3, :3] @ np.asarray(start)
    return out


def voxel_box(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """First and one-past-last voxel index of a non-empty mask along each axis (two arrays of
    shape (ndim,))."""
    lo, hi = [], []
    for axis in range(mask.ndim):
        other = tuple(a for a in range(mask.ndim) if a != axis)
        idx = np.flatnonzero(mask.any(axis=other))
        lo.append(idx[0])
        hi.append(idx[-1] + 1)
    return np.array(lo), np.array(hi)


def crop_to_mask(mask: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The smallest box of a (X, Y, Z) ``mask`` holding all its voxels, and that box's affine
    (same world positions). ``mask`` must not be empty."""
    lo, hi = voxel_box(mask)
    return mask[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]], crop_affine(affine, lo)


def world_bounding_box(
    mask: np.ndarray, affine: np.ndarray
) -> tuple[np.ndarray, np.ndarray] | None:
    """Axis-aligned world box (RAS+, mm) containing every voxel of a (X, Y, Z) ``mask`` whole.

    A voxel is the parallelepiped of its centre ± half a voxel along each voxel axis, so the box
    is the box of the voxel centres widened by half a voxel's world extent along each world axis.
    Returns (min, max), each of shape (3,), or ``None`` for an empty mask.
    """
    mask = np.asarray(mask, dtype=bool)
    if not mask.any():
        return None
    # A linear function of the voxel index is largest on a voxel with a face neighbour outside
    # the mask, so the surface voxels suffice (voxels on the volume's edge are surface).
    affine = np.asarray(affine, dtype=np.float64)
    world = np.argwhere(_surface(mask)) @ affine[:3, :3].T + affine[:3, 3]
    half = 0.5 * np.abs(affine[:3, :3]).sum(axis=1)
    return world.min(axis=0) - half, world.max(axis=0) + half


def _surface(mask: np.ndarray) -> np.ndarray:
    """Voxels of a (X, Y, Z) boolean ``mask`` with a face neighbour outside it (or outside the
    volume): ``mask & ~binary_erosion(mask, border_value=0)``."""
    p = np.pad(mask, 1)
    inner = (slice(1, -1),) * 3
    interior = mask.copy()
    for axis in range(3):
        for shifted in (slice(None, -2), slice(2, None)):
            index = list(inner)
            index[axis] = shifted
            interior &= p[tuple(index)]
    return mask & ~interior


def ras_to_lps(vertices: np.ndarray) -> np.ndarray:
    """(N, 3) world coordinates RAS+ → LPS+, mm (and back: the map is its own inverse)."""
    return np.asarray(vertices, dtype=np.float64) * RAS_TO_LPS


def corner_distance_mm(a: np.ndarray, b: np.ndarray, shape: Sequence[int]) -> float:
    """Largest distance (mm) between where two affines put the corners of a volume of
    ``shape`` (voxels)."""
    corners = np.array(
        [
            [i, j, k, 1]
            for i in (0, shape[0] - 1)
            for j in (0, shape[1] - 1)
            for k in (0, shape[2] - 1)
        ],
        float,
    ).T
    return float(
        np.max(np.linalg.norm((np.asarray(a) @ corners - np.asarray(b) @ corners)[:3], axis=0))
    )


def grid_mismatch(
    image_shape: Sequence[int],
    image_affine: np.ndarray,
    label_shape: Sequence[int],
    label_affine: np.ndarray,
    tolerance_mm: float = 1.0,
    reference: str = "image",
) -> str | None:
    """What keeps a label off its image's voxel grid, in words, or ``None`` if nothing does.

    Parameters
    ----------
    image_shape, image_affine
        (X, Y, Z) shape (voxels) and (4, 4) affine (mm) of the image.
    label_shape, label_affine
        The same of the label.
    tolerance_mm
        How far (mm) the label's affine may place a corner of the volume from where the
        image's affine places it.
    reference
        What the image is called in the message (``image``, ``segmentation``).
    """
    image_shape, label_shape = tuple(image_shape), tuple(label_shape)
    if label_shape != image_shape:
        return f"shape {label_shape} differs from {reference} shape {image_shape}"
    shift = corner_distance_mm(image_affine, label_affine, image_shape)
    if shift > tolerance_mm:
        return f"affine differs from {reference} by {shift:.1f} mm"
    return None


def embed_in_grid(
    labels: np.ndarray,
    label_affine: np.ndarray,
    image_shape: Sequence[int],
    image_affine: np.ndarray,
    tolerance_mm: float = 1.0,
) -> np.ndarray | str:
    """Place a label map cropped from its image's grid back onto that grid.

    3D Slicer saves a segmentation cropped to its segments' extent: a smaller array whose
    origin is moved by whole voxels. If ``label_affine`` is ``image_affine`` moved by an integer
    voxel offset (every corner of the crop within ``tolerance_mm`` of where the image's grid
    puts it) and the crop lies inside the image, return the (X, Y, Z) label map of
    ``image_shape`` with the crop at its place and 0 elsewhere; otherwise what is wrong, in
    words.
    """
    labels = np.asarray(labels)
    image_shape = tuple(int(n) for n in image_shape)
    relative = np.linalg.solve(np.asarray(image_affine, float), np.asarray(label_affine, float))
    offset = np.round(relative[:3, 3]).astype(int)
    moved = np.asarray(image_affine, float).copy()
    moved[:3, 3] = (moved @ np.append(offset, 1.0))[:3]
    shift = corner_distance_mm(moved, label_affine, labels.shape)
    if shift > tolerance_mm:
        return f"not the image's grid cropped: {shift:.1f} mm off after the best voxel shift"
    end = offset + np.array(labels.shape)
    if np.any(offset < 0) or np.any(end > np.array(image_shape)):
        return (
            f"crop at voxels {offset.tolist()}..{(end - 1).tolist()} reaches outside the image "
            f"shape {image_shape}"
        )
    out = np.zeros(image_shape, dtype=labels.dtype)
    out[offset[0] : end[0], offset[1] : end[1], offset[2] : end[2]] = labels
    return out


def check_same_grid(
    subject: str,
    image_shape: Sequence[int],
    image_affine: np.ndarray,
    label_shape: Sequence[int],
    label_affine: np.ndarray,
    label_path: str,
    tolerance_mm: float = 1.0,
    reference: str = "image",
) -> None:
    """Check that a label lies on its image's voxel grid (:func:`grid_mismatch`).

    Raises
    ------
    InvalidInputError
        Naming ``subject`` and ``label_path``, if the shapes differ (both are given) or the
        label's affine places the volume more than ``tolerance_mm`` from the image's.
    """
    problem = grid_mismatch(
        image_shape, image_affine, label_shape, label_affine, tolerance_mm, reference
    )
    if problem:
        raise InvalidInputError(
            subject,
            label_path,
            f"label {problem} (validation.affine_tolerance_mm = {tolerance_mm:g}): a label must "
            f"lie on its {reference}'s voxel grid; was the file replaced after validation?",
        )
