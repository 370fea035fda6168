"""Whole-slide images in: a pyramidal slide opened with its physical pixel size, its levels,
the level the plan segments at, and RGB regions read without decoding a whole level."""

from __future__ import annotations

import logging
import os
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cohortseg.core.errors import InvalidInputError

log = logging.getLogger(__name__)


class TiledLevels:
    """Direct tile reads of a TIFF pyramid's tiled levels: each tile read and decoded once
    (tifffile) and kept in a small LRU cache, so that patches in raster order share decoded
    tiles. Faster than ``read_region`` of tiffslide, whose zarr store crosses threads for
    every call. ``None`` entries mark levels that are not tiled RGB(A) uint8."""

    def __init__(self, tif: object, series: int, cache_tiles: int = 256) -> None:
        self.tif = tif
        self.pages = []
        for level in tif.series[series].levels:
            page = level.keyframe
            usable = page.is_tiled and page.dtype == np.uint8 and page.samplesperpixel in (3, 4)
            usable = usable and page.planarconfig == 1 and page.imagedepth == 1
            self.pages.append(page if usable else None)
        self.cache: OrderedDict[tuple[int, int], np.ndarray] = OrderedDict()
        self.cache_tiles = cache_tiles

    def tile(self, level: int, index: int) -> np.ndarray:
        """Tile ``index`` (row-major) of ``level`` as (tile rows, tile columns, samples)."""
        key = (level, index)
        if key in self.cache:
            self.cache.move_to_end(key)
            return self.cache[key]
        page = self.pages[level]
        handle = self.tif.filehandle
        handle.seek(page.dataoffsets[index])
        data = handle.read(page.databytecounts[index])
        segment, _, shape = page.decode(data, index, jpegtables=page.jpegtables)
        if segment is None:  # an empty (never written) tile
            segment = np.zeros(shape, np.uint8)
        tile = np.asarray(segment).reshape(shape[1:])
        self.cache[key] = tile
        if len(self.cache) > self.cache_tiles:
            self.cache.popitem(last=False)
        return tile

    def read(self, level: int, r0: int, c0: int, r1: int, c1: int) -> np.ndarray:
        """Pixels [r0, r1) × [c0, c1) of ``level`` (inside it), (rows, columns, samples)."""
        page = self.pages[level]
        th, tw = page.tilelength, page.tilewidth
        across = -(-page.imagewidth // tw)
        out = np.empty((r1 - r0, c1 - c0, page.samplesperpixel), np.uint8)
        for tr in range(r0 // th, (r1 - 1) // th + 1):
            for tc in range(c0 // tw, (c1 - 1) // tw + 1):
                tile = self.tile(level, tr * across + tc)
                a, b = max(r0, tr * th), min(r1, (tr + 1) * th)
                c, d = max(c0, tc * tw), min(c1, (tc + 1) * tw)
                out[a - r0 : b - r0, c - c0 : d - c0] = tile[
                    a - tr * th : b - tr * th, c - tc * tw : d - tc * tw
                ]
        return out


@dataclass
class Slide:
    """An open pyramidal slide.

    Attributes
    ----------
    slide_id
        The slide's id (names it in errors and outputs).
    path
        Its file.
    handle
        The ``tiffslide.TiffSlide`` (or ``openslide.OpenSlide``) reading it.
    pixel_size_um
        Level 0's pixel size (µm per pixel; square pixels assumed).
    dimensions
        (width, height) of each level in pixels, level 0 first.
    downsamples
        Each level's downsample factor relative to level 0.
    tiles
        Direct tile reads where the levels are tiled TIFF pages (else ``handle`` reads).
    """

    slide_id: str
    path: str
    handle: object
    pixel_size_um: float
    dimensions: tuple[tuple[int, int], ...]
    downsamples: tuple[float, ...]
    tiles: TiledLevels | None = None

    def level_pixel_size_um(self, level: int) -> float:
        """µm per pixel at ``level``."""
        return self.pixel_size_um * self.downsamples[level]

    def read(self, level: int, row: int, col: int, height: int, width: int) -> np.ndarray:
        """RGB pixels (height, width, 3) uint8 of ``level`` whose first pixel is (``row``,
        ``col``) in that level's grid; outside the slide reads white (255)."""
        w_lev, h_lev = self.dimensions[level]
        out = np.full((height, width, 3), 255, np.uint8)
        r0, c0 = max(row, 0), max(col, 0)
        r1, c1 = min(row + height, h_lev), min(col + width, w_lev)
        if r1 <= r0 or c1 <= c0:
            return out
        try:
            if self.tiles is not None and self.tiles.pages[level] is not None:
                region = self.tiles.read(level, r0, c0, r1, c1)
            else:
                scale = self.downsamples[level]
                location = (int(round(c0 * scale)), int(round(r0 * scale)))  # level-0 (x, y)
                region = self.handle.read_region(location, level, (c1 - c0, r1 - r0))
        except Exception as exc:  # the readers raise many types for a truncated tile
            raise InvalidInputError(self.slide_id, self.path, f"cannot read: {exc}") from exc
        region = np.asarray(region)
        if region.ndim == 2:
            region = np.repeat(region[..., None], 3, axis=2)
        out[r0 - row : r1 - row, c0 - col : c1 - col] = _flatten_alpha(region)
        return out

    def close(self) -> None:
        """Release the reader's file handle."""
        self.handle.close()


def _flatten_alpha(region: np.ndarray) -> np.ndarray:
    """(h, w, 3 or 4) → (h, w, 3) uint8, transparent pixels white (OpenSlide's convention)."""
    rgb = region[..., :3].astype(np.uint8, copy=False)
    if region.shape[-1] == 4:
        alpha = region[..., 3:4].astype(np.float32) / 255.0
        rgb = np.round(rgb * alpha + 255.0 * (1.0 - alpha)).astype(np.uint8)
    return rgb


def open_slide(
    slide_id: str, path: str | os.PathLike[str], pixel_size_um: float | None = None
) -> Slide:
    """Open a pyramidal slide (TIFF/SVS and the other formats ``tiffslide`` reads; OpenSlide for
    the rest where it is installed) with its physical pixel size.

    Parameters
    ----------
    pixel_size_um
        µm per level-0 pixel to use when the file records none (``wsi.pixel_size_um``); a
        recorded pixel size always wins.

    Raises
    ------
    InvalidInputError
        The file is missing, cannot be opened, or records no pixel size and none was given.
    """
    path = str(path)
    if not Path(path).is_file():
        raise InvalidInputError(slide_id, path, "slide file does not exist")
    handle = _open_reader(slide_id, path)
    props = handle.properties
    mpp = props.get("tiffslide.mpp-x") or props.get("openslide.mpp-x")
    if mpp:
        size_um = float(mpp)
    elif pixel_size_um:
        size_um = float(pixel_size_um)
        log.info("%s: no pixel size recorded; using wsi.pixel_size_um = %g", slide_id, size_um)
    else:
        handle.close()
        raise InvalidInputError(
            slide_id,
            path,
            "the slide records no physical pixel size: set wsi.pixel_size_um (µm per pixel)",
        )
    dims = tuple((int(w), int(h)) for w, h in handle.level_dimensions)
    downs = tuple(float(d) for d in handle.level_downsamples)
    tif = getattr(handle, "ts_tifffile", None)
    tiles = TiledLevels(tif, int(props.get("tiffslide.series-index") or 0)) if tif else None
    if tiles is not None and len(tiles.pages) != len(dims):
        tiles = None  # levels counted differently from tiffslide's: read through it
    slide = Slide(slide_id, path, handle, size_um, dims, downs, tiles)
    try:
        _check_readable(slide)
    except InvalidInputError:
        slide.close()
        raise
    return slide


def _open_reader(slide_id: str, path: str) -> object:
    """A ``TiffSlide`` for the file, else an ``OpenSlide`` where that is installed."""
    import tiffslide

    try:
        return tiffslide.TiffSlide(path)
    except Exception as exc:  # tifffile raises many types for foreign or broken files
        first = exc
    try:
        import openslide
    except ImportError:
        raise InvalidInputError(slide_id, path, f"cannot open as a slide: {first}") from first
    try:
        return openslide.OpenSlide(path)
    except Exception as exc:
        raise InvalidInputError(slide_id, path, f"cannot open as a slide: {first}") from exc


def _check_readable(slide: Slide) -> None:
    """Read the last tile of level 0 and of the smallest level: a truncated file fails here,
    when the slide is opened, rather than halfway through a job."""
    for level in (0, len(slide.dimensions) - 1):
        w, h = slide.dimensions[level]
        slide.read(level, max(h - 16, 0), max(w - 16, 0), 16, 16)


def choose_level(slide: Slide, target_pixel_size_um: float) -> int:
    """The coarsest level whose pixel size is at most ``target_pixel_size_um`` × 1.1 (never
    coarser than asked, within rounding of the recorded factors); level 0 if all are coarser."""
    sizes = [slide.level_pixel_size_um(k) for k in range(len(slide.dimensions))]
    fine_enough = [k for k, s in enumerate(sizes) if s <= target_pixel_size_um * 1.1]
    return max(fine_enough) if fine_enough else 0


def thumbnail_level(slide: Slide, max_side_px: int) -> int:
    """The finest level whose longer side is at most ``max_side_px`` (the coarsest if none)."""
    fits = [k for k, (w, h) in enumerate(slide.dimensions) if max(w, h) <= max_side_px]
    return min(fits) if fits else len(slide.dimensions) - 1


def read_level(slide: Slide, level: int, strip_rows: int = 512) -> np.ndarray:
    """A whole (small) level as (height, width, 3) uint8, read in strips. For thumbnail levels
    only: the caller picks a level that fits in memory (:func:`thumbnail_level`)."""
    w, h = slide.dimensions[level]
    strips = [slide.read(level, r, 0, min(strip_rows, h - r), w) for r in range(0, h, strip_rows)]
    return np.concatenate(strips, axis=0)


def level_scale(slide: Slide, from_level: int, to_level: int) -> float:
    """Factor that takes pixel coordinates of ``from_level`` to ``to_level`` (coarser < 1)."""
    return slide.downsamples[from_level] / slide.downsamples[to_level]


def slide_plan(
    slide: Slide, target_pixel_size_um: float, patch_size_px: Sequence[int] | int
) -> dict:
    """What a slide is segmented at: the chosen ``level``, its ``pixel_size_um``, its
    ``downsample`` from level 0, the ``patch_size`` (pixels, rows × columns) and the patch's
    extent in µm."""
    level = choose_level(slide, target_pixel_size_um)
    size = [int(patch_size_px)] * 2 if np.isscalar(patch_size_px) else list(patch_size_px)
    px = slide.level_pixel_size_um(level)
    return {
        "level": level,
        "pixel_size_um": px,
        "downsample": slide.downsamples[level],
        "dimensions": list(slide.dimensions[level]),
        "patch_size": size,
        "patch_extent_um": [s * px for s in size],
    }
