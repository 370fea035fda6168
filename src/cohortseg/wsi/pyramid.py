"""Pyramidal tiled TIFFs written tile by tile from a strip reader, so that no level is ever
whole in memory: label maps of segmented slides, and the synthetic slides of the demo, tests
and benchmarks."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator

import numpy as np

from cohortseg.core.io import atomic_write

#: ``read(row_start, row_stop, step)`` → level 0 subsampled by ``step`` between rows
#: ``row_start`` and ``row_stop``: the pixel at the centre of each step × step block (level-0
#: pixel ``r·step + step // 2``, the nearest-neighbour convention of :mod:`cohortseg.wsi.labels`),
#: as (rows, columns) or (rows, columns, 3).
StripReader = Callable[[int, int, int], np.ndarray]


def pyramid_steps(height: int, width: int, tile: int) -> list[int]:
    """Downsample factors of a pyramid's levels: 1, 2, 4, … until the level fits one tile."""
    steps = [1]
    while max(height, width) / steps[-1] > tile:
        steps.append(steps[-1] * 2)
    return steps


def _tiles(
    read: StripReader, height: int, width: int, step: int, tile: int, fill: int
) -> Iterator[np.ndarray]:
    """The tiles of the level subsampled by ``step``, row-major, each padded to tile × tile."""
    h, w = -(-height // step), -(-width // step)
    for r in range(0, h, tile):
        strip = read(r * step, min((r + tile) * step, height), step)
        for c in range(0, w, tile):
            block = strip[:, c : c + tile]
            if block.shape[:2] != (tile, tile):
                padded = np.full((tile, tile, *block.shape[2:]), fill, block.dtype)
                padded[: block.shape[0], : block.shape[1]] = block
                block = padded
            yield np.ascontiguousarray(block)


def write_pyramid(
    path: str | os.PathLike[str],
    read: StripReader,
    height: int,
    width: int,
    pixel_size_um: float,
    rgb: bool,
    tile: int = 256,
    compression: str | None = "zlib",
    fill: int = 0,
) -> list[int]:
    """Write a pyramidal tiled TIFF (level 0 plus SubIFDs subsampled by 2, 4, …) whose pixel
    size (µm) is in the resolution tags of every level; written atomically.

    Parameters
    ----------
    read
        The level-0 strip reader (:data:`StripReader`), uint8.
    height, width
        Level 0's size in pixels.
    rgb
        Three samples per pixel (a slide) or one (a label map).

    Returns the levels' downsample factors.
    """
    import tifffile

    steps = pyramid_steps(height, width, tile)
    with atomic_write(path) as tmp, tifffile.TiffWriter(tmp, bigtiff=True) as tif:
        for k, step in enumerate(steps):
            h, w = -(-height // step), -(-width // step)
            per_cm = 1e4 / (pixel_size_um * step)
            tif.write(
                _tiles(read, height, width, step, tile, fill),
                shape=(h, w, 3) if rgb else (h, w),
                dtype=np.uint8,
                tile=(tile, tile),
                photometric="rgb" if rgb else "minisblack",
                compression=compression,
                resolution=(per_cm, per_cm),
                resolutionunit="CENTIMETER",
                subifds=len(steps) - 1 if k == 0 else None,
                subfiletype=1 if k else 0,
                metadata=None,
            )
    return steps


def array_reader(array: np.ndarray) -> StripReader:
    """A strip reader over an in-memory level-0 array (tests and small label maps)."""
    return lambda r0, r1, step: array[r0 + step // 2 : r1 : step, step // 2 :: step]
