"""A slide segmented tile by tile: overlapping windows on tissue only, blended with Gaussian
weights across window borders, block by block so that memory is bounded whatever the slide's
size; the label map written as a pyramidal tiled TIFF, with a PNG overview and class areas."""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import h5py
import numpy as np
from scipy.ndimage import binary_dilation

from cohortseg.core.io import atomic_write
from cohortseg.wsi.pyramid import write_pyramid
from cohortseg.wsi.slides import Slide, level_scale, read_level, thumbnail_level

log = logging.getLogger(__name__)


#: ``predict(rgb)``: (n, 3, T, T) uint8 windows → (n, C, T, T) float32 class probabilities.
Predictor = Callable[[np.ndarray], np.ndarray]


#: Label map tiles of the scratch store and of the pyramidal TIFF (pixels).
TILE = 256


OVERLAY_COLOURS = np.array(
    [[0, 0, 0], [230, 25, 75], [60, 180, 75], [0, 130, 200], [245, 130, 48]], np.float32
)


def window_starts(length: int, window: int, stride: int) -> list[int]:
    """First pixels of windows of ``window`` pixels every ``stride`` along an axis of
    ``length``; the last window ends at the axis's end (one window at 0 if it is shorter)."""
    if length <= window:
        return [0]
    starts = list(range(0, length - window, stride))
    return [*starts, length - window]


def block_size(max_memory_mb: float, n_classes: int, window: int) -> int:
    """Side (pixels, a multiple of :data:`TILE`) of the output blocks whose float32
    probability and weight accumulators fit in ``max_memory_mb``; at least one tile. Sized for
    (n_classes + 1) × (block + 2·window)² × 4 bytes, though a block's accumulator now spans
    only (block + window)² (windows reach right and down from the block where they start)."""
    side = math.sqrt(max_memory_mb * 2**20 / ((n_classes + 1) * 4)) - 2 * window
    return max(TILE, int(side) // TILE * TILE)


def gaussian_weights(window: int, sigma_scale: float = 0.125) -> np.ndarray:
    """(window, window) float32 Gaussian blending weights (σ = ``sigma_scale`` × window),
    peak 1, floored at 1e-3 so that every pixel of a window counts."""
    x = np.arange(window, dtype=np.float64) - (window - 1) / 2
    g = np.exp(-(x**2) / (2 * (sigma_scale * window) ** 2))
    return np.maximum(np.outer(g, g), 1e-3).astype(np.float32)


def _tissue_windows(
    tissue: np.ndarray, scale: float, rows: Sequence[int], cols: Sequence[int], window: int
) -> set[tuple[int, int]]:
    """Windows (row start, column start) that hold tissue; ``scale``: tissue-mask pixels per
    level pixel (< 1)."""
    keep = set()
    h, w = tissue.shape
    for r in rows:
        r0, r1 = int(r * scale), min(h, int(math.ceil((r + window) * scale)) + 1)
        band = tissue[r0:r1]
        for c in cols:
            c0, c1 = int(c * scale), min(w, int(math.ceil((c + window) * scale)) + 1)
            if band[:, c0:c1].any():
                keep.add((r, c))
    return keep


def _tissue_in_block(
    tissue: np.ndarray, scale: float, box: tuple[int, int, int, int]
) -> np.ndarray:
    """The tissue mask (bool, on a coarse level; ``scale``: mask pixels per level pixel) at
    the pixels of ``box``, nearest neighbour at the pixel centres."""
    r0, r1, c0, c1 = box
    rows = np.minimum(((np.arange(r0, r1) + 0.5) * scale).astype(np.int64), tissue.shape[0] - 1)
    cols = np.minimum(((np.arange(c0, c1) + 0.5) * scale).astype(np.int64), tissue.shape[1] - 1)
    return tissue[np.ix_(rows, cols)]


def _blocks(height: int, width: int, block: int) -> Iterator[tuple[int, int, int, int]]:
    """Output blocks (row0, row1, col0, col1), row-major."""
    for r0 in range(0, height, block):
        for c0 in range(0, width, block):
            yield r0, min(r0 + block, height), c0, min(c0 + block, width)


def _block_sums(
    slide: Slide,
    level: int,
    predict: Predictor,
    acc: np.ndarray,
    box: tuple[int, int, int, int],
    windows: list[tuple[int, int]],
    window: int,
    batch_size: int,
    weights: np.ndarray,
) -> None:
    """Add the windows that start in block ``box`` into ``acc`` ((n_classes + 1, rows +
    window, columns + window) float32 from the block's first pixel: weighted class
    probabilities, then the weights), each window predicted here and nowhere else."""
    r0, _, c0, _ = box
    n_classes = acc.shape[0] - 1
    for k in range(0, len(windows), batch_size):
        batch = windows[k : k + batch_size]
        rgb = np.stack([slide.read(level, r, c, window, window) for r, c in batch])
        out = predict(rgb.transpose(0, 3, 1, 2))
        for (r, c), p in zip(batch, out, strict=True):
            rr, cc = slice(r - r0, r - r0 + window), slice(c - c0, c - c0 + window)
            acc[:n_classes, rr, cc] += p * weights
            acc[n_classes, rr, cc] += weights


def _block_labels(acc: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """Labels (rows, cols) uint8 of a finished block from its sums (:func:`_block_sums`)."""
    n_classes = acc.shape[0] - 1
    labels = acc[:n_classes, :rows, :cols].argmax(0).astype(np.uint8)
    labels[acc[n_classes, :rows, :cols] == 0] = 0  # no tissue window reached these pixels
    return labels


def _segment_block(
    slide: Slide,
    level: int,
    predict: Predictor,
    carry: h5py.Dataset,
    box: tuple[int, int, int, int],
    windows: list[tuple[int, int]],
    window: int,
    batch_size: int,
    weights: np.ndarray,
) -> np.ndarray:
    """Labels (box rows, box columns) uint8 of one block: the sums carried to it (``carry``:
    (n_classes + 1, H, W) float32, see :func:`_block_sums`) plus the ``windows`` touching it
    that start in it; what those add right of and below the block is carried on."""
    r0, r1, c0, c1 = box
    height, width = carry.shape[1:]
    rows_end, cols_end = min(r1 + window, height), min(c1 + window, width)
    acc = np.zeros((carry.shape[0], r1 - r0 + window, c1 - c0 + window), np.float32)
    carry.read_direct(  # straight into acc: no second block-sized array
        acc, np.s_[:, r0:rows_end, c0:cols_end], np.s_[:, : rows_end - r0, : cols_end - c0]
    )
    starting = [(r, c) for r, c in windows if r >= r0 and c >= c0]
    _block_sums(slide, level, predict, acc, box, starting, window, batch_size, weights)
    carry[:, r0:rows_end, c1:cols_end] = acc[:, : rows_end - r0, c1 - c0 : cols_end - c0]
    carry[:, r1:rows_end, c0:c1] = acc[:, r1 - r0 : rows_end - r0, : c1 - c0]
    return _block_labels(acc, r1 - r0, c1 - c0)


def segment_slide(
    slide: Slide,
    level: int,
    predict: Predictor,
    n_classes: int,
    tissue: np.ndarray,
    tissue_level: int,
    scratch: str | os.PathLike[str],
    window: int = 256,
    overlap: float = 0.25,
    batch_size: int = 4,
    max_memory_mb: float = 256.0,
) -> np.ndarray:
    """Segment ``slide`` at ``level`` into an (H, W) uint8 label map in the HDF5 file
    ``scratch`` (dataset ``label``, 256 × 256 chunks), block by block.

    Windows of ``window`` pixels overlap by ``overlap``; only windows over tissue (the
    ``tissue`` mask on ``tissue_level``) are predicted; pixels no window reached, and pixels
    more than one tissue-mask pixel from tissue, are background. Blocks are sized so their
    accumulators fit ``max_memory_mb`` (:func:`block_size`) and done row-major; each window is
    predicted once, in the block where it starts; what it adds right of and below that block
    is carried to the blocks there through an HDF5 file beside ``scratch`` (removed at the
    end), so memory stays bounded and the result does not depend on the block size (up to the
    float32 rounding of sums added in another order).

    Returns the pixel count of each label 0..n_classes at ``level``.
    """
    n_out = n_classes + 1
    width, height = slide.dimensions[level]
    stride = max(1, int(round(window * (1 - overlap))))
    rows, cols = window_starts(height, window, stride), window_starts(width, window, stride)
    scale = level_scale(slide, level, tissue_level)
    keep = _tissue_windows(tissue, scale, rows, cols, window)
    # glass is background: labels only within one tissue-mask pixel of tissue (the mask is
    # coarse; the margin keeps objects that reach the tissue's edge whole)
    near_tissue = binary_dilation(tissue, iterations=1)
    block = block_size(max_memory_mb, n_out, window)
    weights = gaussian_weights(window)
    counts = np.zeros(n_out, np.int64)
    log.info(
        "%s: level %d (%d × %d px), %d of %d windows on tissue, blocks of %d px",
        slide.slide_id,
        level,
        width,
        height,
        len(keep),
        len(rows) * len(cols),
        block,
    )
    carry_path = Path(f"{scratch}.carry.h5")
    try:
        with h5py.File(scratch, "w") as h5, h5py.File(carry_path, "w") as carry_h5:
            out = h5.create_dataset(
                "label",
                (height, width),
                np.uint8,
                chunks=(min(TILE, height), min(TILE, width)),
                compression="lzf",
                fillvalue=0,
            )
            # sums that windows of earlier blocks added to later blocks' pixels; only the
            # strips along block borders are ever written (unwritten chunks read as 0)
            carry = carry_h5.create_dataset(
                "sums",
                (n_out + 1, height, width),
                np.float32,
                chunks=(n_out + 1, min(TILE, height), min(TILE, width)),
                fillvalue=0,
            )
            windows = sorted(keep)
            for box in _blocks(height, width, block):
                r0, r1, c0, c1 = box
                touching = [
                    (r, c)
                    for r, c in windows
                    if r < r1 and r + window > r0 and c < c1 and c + window > c0
                ]
                if not touching:
                    counts[0] += (r1 - r0) * (c1 - c0)
                    continue
                labels = _segment_block(
                    slide, level, predict, carry, box, touching, window, batch_size, weights
                )
                labels[~_tissue_in_block(near_tissue, scale, box)] = 0
                out[r0:r1, c0:c1] = labels
                counts += np.bincount(labels.ravel(), minlength=n_out)[:n_out]
    finally:
        carry_path.unlink(missing_ok=True)
    return counts


def write_label_pyramid(
    scratch: str | os.PathLike[str], path: str | os.PathLike[str], pixel_size_um: float
) -> None:
    """The scratch label map as a pyramidal tiled TIFF with ``pixel_size_um`` (µm per pixel of
    its full-resolution level) in its resolution tags."""
    with h5py.File(scratch, "r") as h5:
        labels = h5["label"]
        height, width = labels.shape
        write_pyramid(
            path,
            lambda r0, r1, step: labels[r0 + step // 2 : r1 : step, step // 2 :: step],
            height,
            width,
            pixel_size_um,
            False,
            TILE,
        )


def overview(
    slide: Slide,
    level: int,
    scratch: str | os.PathLike[str],
    path: str | os.PathLike[str],
    max_side_px: int = 1024,
    alpha: float = 0.45,
) -> None:
    """A PNG of the slide's thumbnail (at most ``max_side_px`` per side) with the label map of
    ``level`` drawn over it in colour (nearest-neighbour)."""
    from PIL import Image

    thumb_level = thumbnail_level(slide, max_side_px)
    rgb = read_level(slide, thumb_level).astype(np.float32)
    h, w = rgb.shape[:2]
    scale = slide.downsamples[thumb_level] / slide.downsamples[level]  # level px per thumb px
    with h5py.File(scratch, "r") as h5:
        labels = h5["label"]
        rows = np.minimum(((np.arange(h) + 0.5) * scale).astype(np.int64), labels.shape[0] - 1)
        cols = np.minimum(((np.arange(w) + 0.5) * scale).astype(np.int64), labels.shape[1] - 1)
        step = max(1, int(scale))
        if step > 1 and np.all(np.diff(rows) == step) and np.all(np.diff(cols) == step):
            lab = labels[rows[0] : rows[-1] + 1 : step, cols[0] : cols[-1] + 1 : step]
        else:
            lab = np.stack([labels[r][cols] for r in rows])
    colours = OVERLAY_COLOURS[np.minimum(lab, len(OVERLAY_COLOURS) - 1)]
    drawn = (lab > 0)[..., None]
    rgb = np.where(drawn, (1 - alpha) * rgb + alpha * colours, rgb)
    with atomic_write(path) as tmp:
        Image.fromarray(rgb.round().astype(np.uint8)).save(tmp, format="PNG")


def class_areas_mm2(counts: np.ndarray, pixel_size_um: float) -> list[float]:
    """Area (mm²) of each class 1..C from pixel counts 0..C at ``pixel_size_um``."""
    return [float(n) * (pixel_size_um * 1e-3) ** 2 for n in counts[1:]]


def scratch_path(path: str | os.PathLike[str]) -> Path:
    """The scratch label store beside an output label map (``.scratch.{stem}.h5``; not
    ``.{name}.*``, which the atomic writer of the label map clears as stale)."""
    p = Path(path)
    return p.with_name(f".scratch.{p.stem}.h5")
