"""Patch sampling with foreground oversampling, the per-subject HDF5 patch store, and one
dataset over all stores."""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import h5py
import numpy as np

from cohortseg.core.errors import CohortsegError

if TYPE_CHECKING:
    import torch
from cohortseg.core.io import atomic_write


def sample_origins(
    label: np.ndarray,
    patch_size: Sequence[int],
    n_patches: int,
    foreground_fraction: float,
    rng: np.random.Generator,
) -> np.ndarray:
    """Choose patch origins (voxel index of a patch's first corner) in a (X, Y, Z) label map.

    A share ``foreground_fraction`` of patches is centred on a labelled voxel of a class drawn
    uniformly among the classes present; the rest are uniform over the volume. Origins may be
    negative or extend past the end when the volume is smaller than the patch: extraction pads.

    Returns an (n_patches, 3) int64 array.
    """
    shape = np.asarray(label.shape)
    size = np.asarray(patch_size)
    # where the volume is smaller than the patch, centre it in the patch (negative origin)
    low = np.where(shape < size, (shape - size) // 2, 0)
    high = np.where(shape < size, low, shape - size)
    n_fg = int(round(n_patches * foreground_fraction))
    classes = [c for c in np.unique(label) if c != 0]
    coords = {c: None for c in classes}
    origins = np.empty((n_patches, 3), np.int64)
    for i in range(n_patches):
        if i < n_fg and classes:
            c = classes[rng.integers(len(classes))]
            if coords[c] is None:
                coords[c] = np.argwhere(label == c)
            centre = coords[c][rng.integers(len(coords[c]))]
            origin = centre - size // 2
        else:
            origin = np.array([rng.integers(lo, hi + 1) for lo, hi in zip(low, high, strict=True)])
        origins[i] = np.clip(origin, low, high)
    return origins


def extract(
    volume: np.ndarray, origin: Sequence[int], size: Sequence[int], fill: float
) -> np.ndarray:
    """Cut a patch of ``size`` starting at ``origin`` from (X, Y, Z) ``volume``, padding with
    ``fill`` where it reaches outside."""
    out = np.full(tuple(size), fill, dtype=volume.dtype)
    src, dst = [], []
    for o, s, n in zip(origin, size, volume.shape, strict=True):
        a, b = max(o, 0), min(o + s, n)
        src.append(slice(a, max(a, b)))
        dst.append(slice(a - o, a - o + max(0, b - a)))
    out[tuple(dst)] = volume[tuple(src)]
    return out


def dataset_options(compression: str | None, compression_level: int) -> dict:
    """h5py ``create_dataset`` options of a patch store's patch datasets: ``compression``
    (``gzip``, ``lzf`` or ``none``) and Fletcher-32 checksums, so that corruption shows."""
    comp = None if compression in (None, "none") else compression
    opts: dict = {"compression": comp, "fletcher32": True}
    if comp == "gzip":
        opts["compression_opts"] = compression_level
    return opts


def write_store(
    path: str | os.PathLike[str],
    subject: str,
    image: np.ndarray,
    label: np.ndarray,
    affine: np.ndarray,
    spacing_mm: Sequence[float],
    plan: Mapping,
    n_patches: int,
    foreground_fraction: float,
    compression: str | None,
    compression_level: int,
    seed: int,
) -> None:
    """Sample patches from one preprocessed subject and write them to an HDF5 store.

    Datasets: ``image`` (N, 1, *patch) float32 and ``label`` (N, *patch) uint8, one patch per
    chunk; ``origin`` (N, 3) voxel origins in the preprocessed grid. Attributes: ``subject``,
    ``spacing_mm``, ``affine`` (of the preprocessed grid), ``patch_size``, ``n_patches`` and
    ``plan_hash``. Written atomically.
    """
    size = list(plan["patch_size"])
    rng = np.random.default_rng(seed)
    origins = sample_origins(label, size, n_patches, foreground_fraction, rng)
    fill = float(image.min())
    opts = dataset_options(compression, compression_level)
    with atomic_write(path) as tmp, h5py.File(tmp, "w") as h5:
        img = h5.create_dataset(
            "image", (n_patches, 1, *size), np.float32, chunks=(1, 1, *size), **opts
        )
        lab = h5.create_dataset("label", (n_patches, *size), np.uint8, chunks=(1, *size), **opts)
        h5.create_dataset("origin", data=origins)
        for i, origin in enumerate(origins):
            img[i, 0] = extract(image, origin, size, fill)
            lab[i] = extract(label, origin, size, 0)
        h5.attrs.update(
            subject=subject,
            spacing_mm=np.asarray(spacing_mm, float),
            affine=np.asarray(affine, float),
            patch_size=np.asarray(size),
            n_patches=n_patches,
            plan_hash=plan["hash"],
        )


class PatchDataset:
    """All subjects' patch stores seen as one dataset, through an index of (store, row).

    Each DataLoader worker opens its own read-only handle per store, lazily, so the dataset can
    be forked into workers. Items are ``(image (1, *patch) float32, label (1, *patch) int64)``.
    A map-style dataset for ``torch.utils.data.DataLoader``; torch is imported only when items
    are read, so that planning a workflow (which imports this module) stays light.
    """

    def __init__(self, paths: Sequence[str | os.PathLike[str]], plan_hash: str | None = None):
        self.paths = [str(p) for p in paths]
        self.index: list[tuple[int, int]] = []
        for k, path in enumerate(self.paths):
            try:
                with read_store(path) as h5:
                    n = int(h5.attrs["n_patches"])
                    stored = str(h5.attrs["plan_hash"])
                    if h5["image"].shape[0] != n or h5["label"].shape[0] != n:
                        raise CohortsegError(f"patch store {path}: patch count disagrees")
            except (OSError, KeyError) as exc:
                raise CohortsegError(f"patch store {path} is unreadable: {exc}") from exc
            if plan_hash is not None and stored != plan_hash:
                raise CohortsegError(
                    f"patch store {path} "
                    f"was made with plan {stored}, not {plan_hash}: rerun patches"
                )
            self.index.extend((k, i) for i in range(n))
        self._handles: dict[int, h5py.File] = {}
        self._pid = os.getpid()

    def __len__(self) -> int:
        return len(self.index)

    def _store(self, k: int) -> h5py.File:
        if self._pid != os.getpid():  # forked into a worker: never share a parent's handles
            self._handles, self._pid = {}, os.getpid()
        if k not in self._handles:
            self._handles[k] = read_store(self.paths[k])
        return self._handles[k]

    def __getitem__(self, item: int) -> tuple[torch.Tensor, torch.Tensor]:
        import torch

        k, row = self.index[item]
        h5 = self._store(k)
        try:
            image = torch.from_numpy(h5["image"][row])
            label = torch.from_numpy(h5["label"][row].astype(np.int64))[None]
        except OSError as exc:  # a Fletcher-32 checksum mismatch or an unreadable chunk
            raise CohortsegError(
                f"patch store {self.paths[k]} is corrupt at patch {row} ({exc}): delete it and "
                "rerun to rebuild it"
            ) from exc
        return image, label

    def subjects(self) -> list[str]:
        """Subject ids of the stores, in order."""
        return [Path(p).name.removesuffix(".h5") for p in self.paths]


def read_store(path: str | os.PathLike[str]) -> h5py.File:
    """Open a patch store for reading. HDF5 opens files in C, out of sight of Python's audit
    hooks, so this raises the audit event ``cohortseg.open`` with the path first (federated
    training's isolation test records it)."""
    sys.audit("cohortseg.open", str(path))
    return h5py.File(path, "r")


def check_store(path: str | os.PathLike[str]) -> str | None:
    """Cheap integrity check of a patch store (opens it, compares the recorded patch count with
    the datasets, reads the last patch); returns the problem, or ``None`` if it looks whole.

    Corruption inside other chunks is caught when training reads them (Fletcher-32).
    """
    try:
        with read_store(path) as h5:
            n = int(h5.attrs["n_patches"])
            if h5["image"].shape[0] != n or h5["label"].shape[0] != n or n < 1:
                return f"recorded patch count {n} disagrees with the stored data"
            h5["image"][n - 1]
            h5["label"][n - 1]
    except (OSError, KeyError, ValueError) as exc:
        return f"unreadable ({exc})"
    return None
