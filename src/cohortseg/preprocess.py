"""Preprocessing shared by training and inference: canonical orientation, resampling to the
plan's spacing, body crop and intensity normalisation, and the exact inverse for predictions."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

import nibabel.orientations as nio
import numpy as np
import torch
import torch.nn.functional as F
from skimage.filters import threshold_otsu

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


def body_crop(
    image: np.ndarray | torch.Tensor, margin: int
) -> tuple[tuple[int, int], tuple[int, int], tuple[int, int]]:
    """Bounding box of the body (Otsu threshold on intensities) with ``margin`` voxels around it.

    Returns ((start, stop),)*3 in voxels. Falls back to the whole volume if nothing is found.
    """
    arr = image.detach().float().cpu().numpy() if isinstance(image, torch.Tensor) else image
    arr = np.asarray(arr, dtype=np.float32)
    sample = arr[::2, ::2, ::2]
    if sample.size < 2 or float(sample.max()) == float(sample.min()):
        return tuple((0, n) for n in arr.shape)  # type: ignore[return-value]
    mask = arr > threshold_otsu(sample)
    if not mask.any():
        return tuple((0, n) for n in arr.shape)  # type: ignore[return-value]
    box = []
    for axis in range(3):
        other = tuple(a for a in range(3) if a != axis)
        hits = np.flatnonzero(mask.any(axis=other))
        box.append(
            (max(0, int(hits[0]) - margin), min(arr.shape[axis], int(hits[-1]) + 1 + margin))
        )
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
    canon, canon_affine, ornt = reorient(np.asarray(data), affine)
    target = resampled_shape(canon.shape, spacing_of(canon_affine), plan["target_spacing_mm"])
    tensor = torch.as_tensor(canon, dtype=torch.float32, device=device)[None]
    tensor = resize(tensor, target, "linear")
    crop = (
        body_crop(tensor[0], int(plan.get("crop_margin", 4)))
        if plan.get("crop", True)
        else (tuple((0, n) for n in target))
    )
    sl = tuple(slice(a, b) for a, b in crop)
    tensor = tensor[(slice(None), *sl)].contiguous()
    tensor = normalise(tensor, plan)
    grid_affine = resize_affine(canon_affine, canon.shape, target)
    grid_affine = grid_affine.copy()
    grid_affine[:3, 3] = grid_affine[:3, 3] + grid_affine[:3, :3] @ np.array([c[0] for c in crop])
    geometry = Geometry(
        native_shape=tuple(int(n) for n in data.shape),
        native_affine=np.asarray(affine).tolist(),
        orientation=np.asarray(ornt).tolist(),
        canonical_shape=tuple(int(n) for n in canon.shape),
        resampled_shape=tuple(int(n) for n in target),
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

    The (C, X', Y', Z') probabilities are padded to the uncropped grid (outside the crop:
    background), resampled linearly to the canonical native shape, reduced by argmax and
    reoriented to the native voxel order, so the result has exactly ``geometry.native_shape``.
    """
    n_classes = probabilities.shape[0]
    full = torch.zeros(
        (n_classes, *geometry.resampled_shape),
        dtype=probabilities.dtype,
        device=probabilities.device,
    )
    full[0] = 1.0
    sl = tuple(slice(a, b) for a, b in geometry.crop)
    full[(slice(None), *sl)] = probabilities
    full = resize(full, geometry.canonical_shape, "linear")
    labels = torch.argmax(full, dim=0).to(torch.uint8).cpu().numpy()
    return undo_reorient(labels, np.asarray(geometry.orientation))
