"""Tissue detection on a slide's low-resolution level: Otsu's threshold on saturation, small
holes closed and specks removed."""

from __future__ import annotations

import numpy as np

from cohortseg.core.errors import InvalidInputError
from cohortseg.wsi.slides import Slide, read_level, thumbnail_level


def saturation(rgb: np.ndarray) -> np.ndarray:
    """HSV saturation (max − min) / max of (…, 3) uint8 RGB, in [0, 1] float32 (0 where black)."""
    rgb = rgb.astype(np.float32)
    high, low = rgb.max(axis=-1), rgb.min(axis=-1)
    return np.where(high > 0, (high - low) / np.maximum(high, 1.0), 0.0).astype(np.float32)


def tissue_mask(rgb: np.ndarray, min_area_px: int = 64, hole_area_px: int = 256) -> np.ndarray:
    """Tissue of an (H, W, 3) uint8 thumbnail as an (H, W) bool mask.

    Glass and background are grey or white (low saturation), stained tissue is coloured: pixels
    above Otsu's threshold on saturation are tissue, then holes under ``hole_area_px`` pixels
    are filled (nuclei-free lumen, fat) and components under ``min_area_px`` removed (dust).
    """
    from skimage.filters import threshold_otsu
    from skimage.morphology import remove_small_holes, remove_small_objects

    sat = saturation(rgb)
    if float(sat.max() - sat.min()) < 0.05:  # uniform: nothing stands out from the glass
        return np.zeros(sat.shape, bool)
    mask = sat > threshold_otsu(sat)
    mask = remove_small_holes(mask, max_size=hole_area_px)
    return remove_small_objects(mask, max_size=min_area_px)


def detect_tissue(slide: Slide, max_side_px: int = 2048) -> tuple[np.ndarray, int]:
    """The slide's tissue mask on its finest level of at most ``max_side_px`` per side.

    Returns the (H, W) bool mask and its level.

    Raises
    ------
    InvalidInputError
        No tissue found.
    """
    level = thumbnail_level(slide, max_side_px)
    mask = tissue_mask(read_level(slide, level))
    if not mask.any():
        raise InvalidInputError(slide.slide_id, slide.path, "no tissue found (empty tissue mask)")
    return mask, level


def tissue_area_mm2(mask: np.ndarray, pixel_size_um: float) -> float:
    """Area (mm²) of a mask whose pixels are ``pixel_size_um`` µm square."""
    return float(mask.sum()) * (pixel_size_um * 1e-3) ** 2
