"""Patches of a slide: origins drawn on tissue only (a share centred on labelled pixels), read
from the slide patch by patch into the HDF5 patch store format of
:mod:`cohortseg.preprocessing.patches`."""

from __future__ import annotations

import os
from collections.abc import Sequence

import h5py
import numpy as np

from cohortseg.core.io import atomic_write
from cohortseg.preprocessing.patches import dataset_options
from cohortseg.wsi.labels import LabelSource
from cohortseg.wsi.slides import Slide

#: Patches written to the store per h5py call.
WRITE_BATCH = 16


def sample_slide_origins(
    tissue: np.ndarray,
    label: np.ndarray | None,
    scale: float,
    level_shape: Sequence[int],
    patch_size: Sequence[int],
    n_patches: int,
    foreground_fraction: float,
    rng: np.random.Generator,
) -> np.ndarray:
    """Patch origins (row, column of a patch's first pixel at the sampling level) on tissue.

    Parameters
    ----------
    tissue
        (h, w) bool tissue mask on a coarse level.
    label
        (h, w) labels on the same coarse grid, or ``None``.
    scale
        Sampling-level pixels per coarse pixel (≥ 1).
    level_shape
        (rows, columns) of the sampling level.

    A share ``foreground_fraction`` of patches is centred in a coarse pixel of a labelled class
    (class drawn uniformly among those present), the rest in a tissue pixel; the centre is
    uniform within that coarse pixel. Origins are clipped so that patches stay inside the
    level (centred where the level is smaller than a patch).

    Returns an (n_patches, 2) int64 array.
    """
    size = np.asarray(patch_size)
    shape = np.asarray(level_shape)
    low = np.where(shape < size, (shape - size) // 2, 0)
    high = np.where(shape < size, low, shape - size)
    pools = [np.argwhere(tissue)]
    classes = [] if label is None else [c for c in np.unique(label) if c != 0]
    fg_pools = [np.argwhere(label == c) for c in classes]
    n_fg = int(round(n_patches * foreground_fraction)) if classes else 0
    origins = np.empty((n_patches, 2), np.int64)
    for i in range(n_patches):
        pool = fg_pools[rng.integers(len(fg_pools))] if i < n_fg else pools[0]
        cell = pool[rng.integers(len(pool))]
        centre = (cell + rng.random(2)) * scale
        origins[i] = np.clip(np.floor(centre - size / 2).astype(np.int64), low, high)
    return origins


def write_slide_store(
    path: str | os.PathLike[str],
    slide: Slide,
    level: int,
    labels: LabelSource,
    origins: np.ndarray,
    patch_size: Sequence[int],
    compression: str | None,
    compression_level: int,
    plan_hash: str,
) -> None:
    """Read the patches at ``origins`` from ``slide``'s ``level`` and write them to an HDF5
    patch store, streaming: one patch in memory at a time; written atomically.

    Datasets: ``image`` (N, 3, *patch) uint8 RGB and ``label`` (N, *patch) uint8, one patch per
    chunk; ``origin`` (N, 2) (row, column) at the level; ``level`` (N,). Attributes:
    ``subject`` (the slide id), ``level``, ``downsample``, ``pixel_size_um``, ``spacing_mm``,
    ``patch_size``, ``n_patches``, ``plan_hash``. Patches are stored in raster order of their
    origins, so neighbouring patches share decoded slide tiles.
    """
    size = [int(s) for s in patch_size]
    order = np.lexsort((origins[:, 1], origins[:, 0]))
    origins = origins[order]
    n = len(origins)
    downsample = slide.downsamples[level]
    opts = dataset_options(compression, compression_level)
    with atomic_write(path) as tmp, h5py.File(tmp, "w") as h5:
        img = h5.create_dataset("image", (n, 3, *size), np.uint8, chunks=(1, 3, *size), **opts)
        lab = h5.create_dataset("label", (n, *size), np.uint8, chunks=(1, *size), **opts)
        h5.create_dataset("origin", data=origins)
        h5.create_dataset("level", data=np.full(n, level, np.int16))
        # patches go to HDF5 a batch at a time (fewer calls into h5py, same chunks), so a few
        # patches at most are in memory
        for i0 in range(0, n, WRITE_BATCH):
            batch = origins[i0 : i0 + WRITE_BATCH]
            img[i0 : i0 + len(batch)] = np.stack(
                [slide.read(level, int(r), int(c), *size).transpose(2, 0, 1) for r, c in batch]
            )
            lab[i0 : i0 + len(batch)] = np.stack(
                [labels.region(downsample, int(r), int(c), *size) for r, c in batch]
            )
        pixel_mm = slide.level_pixel_size_um(level) * 1e-3
        h5.attrs.update(
            subject=slide.slide_id,
            level=level,
            downsample=downsample,
            pixel_size_um=slide.level_pixel_size_um(level),
            spacing_mm=np.array([pixel_mm, pixel_mm]),
            patch_size=np.asarray(size),
            n_patches=n,
            plan_hash=plan_hash,
        )
