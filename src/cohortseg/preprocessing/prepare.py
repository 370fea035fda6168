"""The way in, shared by training and inference: a native image (and its label) taken to the
plan's grid by canonical orientation, resampling to the plan's spacing, body crop and intensity
normalisation, with the :class:`Geometry` record that :mod:`cohortseg.preprocessing.restore` maps
results back with. Grid arithmetic (spacing, orientation, affines) is
:mod:`cohortseg.core.geometry`."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

import nibabel.orientations as nio
import numpy as np
import torch
import torch.nn.functional as F

from cohortseg.core.geometry import (
    check_same_grid,
    crop_affine,
    reorient,
    resampled_shape,
    resize_affine,
    spacing_of,
)
from cohortseg.core.io import load_nifti


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


def device_intensities(
    data: np.ndarray | torch.Tensor, device: str | torch.device = "cpu"
) -> torch.Tensor:
    """Where voxels enter the device: (X, Y, Z) ``data`` of any numeric dtype in native byte
    order (:func:`cohortseg.core.io.load_nifti` reads every file so; or a CPU tensor, pinned for
    an asynchronous copy) copied to ``device`` as it is, and converted to float32 there.

    Returns a (1, X, Y, Z) float32 tensor on ``device``: each value rounded once to float32
    (integers up to 2^24 exactly).
    """
    return torch.as_tensor(data).to(device, non_blocking=True).to(torch.float32)[None]


def prepare_canonical(
    image: CanonicalImage, plan: Mapping, device: str | torch.device = "cpu"
) -> tuple[torch.Tensor, Geometry]:
    """The device-side part of :func:`prepare_image`: resample a canonical image to the plan's
    spacing (trilinear), crop it to the body and normalise it, all on ``device``.

    ``image.data`` goes to the device as :func:`device_intensities` takes it.
    """
    canon_shape = tuple(int(n) for n in image.data.shape)
    target = resampled_shape(canon_shape, spacing_of(image.affine), plan["target_spacing_mm"])
    tensor = device_intensities(image.data, device)
    tensor = resize(tensor, target, "linear")
    crop = (
        body_crop(tensor[0], int(plan["crop_margin"]))
        if plan["crop"]
        else (tuple((0, n) for n in target))
    )
    sl = tuple(slice(a, b) for a, b in crop)
    tensor = tensor[(slice(None), *sl)].contiguous()
    tensor = normalise(tensor, plan)
    grid_affine = resize_affine(image.affine, canon_shape, target)
    grid_affine = crop_affine(grid_affine, [c[0] for c in crop])
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
    label: np.ndarray,
    geometry: Geometry,
    device: str | torch.device = "cpu",
    *,
    label_affine: np.ndarray | None = None,
    subject: str = "?",
    label_path: str = "label",
    affine_tolerance_mm: float = 1.0,
) -> torch.Tensor:
    """Take a native (X, Y, Z) label map to the grid of ``geometry`` (nearest neighbour).

    The label must lie on the native image's grid (:func:`cohortseg.core.geometry.check_same_grid`):
    its shape is always checked against ``geometry.native_shape``; its affine, when
    ``label_affine`` is given, against ``geometry.native_affine`` within ``affine_tolerance_mm``.

    Returns a (1, X', Y', Z') uint8 tensor on ``device``.

    Raises
    ------
    InvalidInputError
        Naming ``subject`` and ``label_path``, if the label is not on the image's grid.
    """
    check_same_grid(
        subject,
        geometry.native_shape,
        np.asarray(geometry.native_affine),
        np.shape(label),
        # without the label's own affine only its shape can be checked
        np.asarray(geometry.native_affine if label_affine is None else label_affine),
        label_path,
        affine_tolerance_mm,
    )
    canon = nio.apply_orientation(np.asarray(label), np.asarray(geometry.orientation))
    tensor = torch.as_tensor(np.ascontiguousarray(canon), dtype=torch.uint8, device=device)[None]
    tensor = resize(tensor, geometry.resampled_shape, "nearest")
    sl = tuple(slice(a, b) for a, b in geometry.crop)
    return tensor[(slice(None), *sl)].contiguous()


def prepare_subject(
    subject: str,
    image_path: str | os.PathLike[str],
    label_path: str | os.PathLike[str],
    plan: Mapping,
    affine_tolerance_mm: float = 1.0,
    device: str | torch.device = "cpu",
) -> tuple[torch.Tensor, torch.Tensor, Geometry]:
    """Read a labelled subject's image and label and take both to the plan's grid.

    The label is checked against the image's grid where it is read, whatever validation found
    earlier (the file may have been replaced since).

    Returns
    -------
    image
        (1, X', Y', Z') float32 tensor on ``device`` (:func:`prepare_image`).
    label
        (1, X', Y', Z') uint8 tensor on ``device`` (:func:`prepare_label`).
    geometry
        The grid of both; ``geometry.affine`` is their (4, 4) voxel-to-world matrix, mm.

    Raises
    ------
    InvalidInputError
        If a file cannot be read or the label is not on the image's grid.
    """
    data, affine = load_nifti(image_path, subject)
    label, label_affine = load_nifti(label_path, subject, dtype=np.uint8)
    image, geometry = prepare_image(data, affine, plan, device)
    grid_label = prepare_label(
        label,
        geometry,
        device,
        label_affine=label_affine,
        subject=subject,
        label_path=str(label_path),
        affine_tolerance_mm=affine_tolerance_mm,
    )
    return image, grid_label, geometry
