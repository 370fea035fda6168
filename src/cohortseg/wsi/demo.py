"""Synthetic whole-slide images: pink tissue blobs with purple "tumour" regions (class 1) on
grey glass, computed strip by strip from their geometry so that a slide of any size is
written without ever being whole in memory; with the tumour as a level-0 mask or as QuPath
GeoJSON polygons."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

import numpy as np

from cohortseg.core.io import write_text
from cohortseg.wsi.pyramid import write_pyramid

GLASS = (236, 236, 238)


TISSUE = (226, 150, 196)


TUMOUR = (120, 60, 150)


@dataclass(frozen=True)
class Ellipse:
    """An axis-aligned ellipse in level-0 pixel coordinates (centre x, y; radii; pixels)."""

    cx: float
    cy: float
    rx: float
    ry: float

    def contains(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Whether points (x, y) (level-0 coordinates, broadcast) lie inside."""
        return ((x - self.cx) / self.rx) ** 2 + ((y - self.cy) / self.ry) ** 2 <= 1.0

    def ring(self, n: int = 96) -> list[list[float]]:
        """The boundary as a closed polygon of ``n`` vertices, [[x, y], …]."""
        t = np.linspace(0, 2 * np.pi, n, endpoint=False)
        pts = np.stack([self.cx + self.rx * np.cos(t), self.cy + self.ry * np.sin(t)], 1)
        return [*pts.round(3).tolist(), pts[0].round(3).tolist()]


@dataclass(frozen=True)
class SyntheticSlide:
    """A synthetic slide's geometry: level-0 size (pixels) and its tissue and tumour blobs."""

    height: int
    width: int
    tissue: tuple[Ellipse, ...]
    tumour: tuple[Ellipse, ...]

    def _grid(self, r0: int, r1: int, step: int) -> tuple[np.ndarray, np.ndarray]:
        """Level-0 coordinates of the centres of the step × step blocks from row r0 to r1."""
        y = np.arange(r0, r1, step, dtype=np.float32)[:, None] + step / 2
        x = np.arange(0, self.width, step, dtype=np.float32)[None, :] + step / 2
        return x, y

    def label(self, r0: int, r1: int, step: int) -> np.ndarray:
        """Labels (0 or 1) uint8 subsampled by ``step`` (a ``StripReader``)."""
        x, y = self._grid(r0, r1, step)
        out = np.zeros((len(y), x.shape[1]), np.uint8)
        for e in self.tumour:
            out |= e.contains(x, y).astype(np.uint8)
        return out

    def rgb(self, r0: int, r1: int, step: int) -> np.ndarray:
        """RGB (rows, columns, 3) uint8 subsampled by ``step`` (a ``StripReader``)."""
        x, y = self._grid(r0, r1, step)
        tissue = np.zeros((len(y), x.shape[1]), bool)
        for e in self.tissue:
            tissue |= e.contains(x, y)
        tumour = self.label(r0, r1, step).astype(bool)
        # a deterministic texture of the coordinates (nuclei-like speckle), ± 18 grey levels
        texture = (9 * np.sin(x * 0.37) * np.cos(y * 0.29) + 9 * np.sin((x + y) * 0.11)).astype(
            np.float32
        )
        out = np.empty((*tissue.shape, 3), np.uint8)
        for k in range(3):
            channel = np.where(tumour, TUMOUR[k], np.where(tissue, TISSUE[k], GLASS[k]))
            out[..., k] = np.clip(channel + np.where(tissue, texture, 0.0), 0, 255)
        return out


def synthetic_slide(height: int, width: int, seed: int = 0) -> SyntheticSlide:
    """Two or three tissue blobs, each but the last holding a tumour ellipse."""
    rng = np.random.default_rng(seed)
    n = int(rng.integers(2, 4))
    tissue, tumour = [], []
    for k in range(n):
        cx = width * (k + 0.5) / n + rng.uniform(-0.03, 0.03) * width
        cy = height * rng.uniform(0.4, 0.6)
        rx = width / n * rng.uniform(0.3, 0.42)
        ry = height * rng.uniform(0.25, 0.38)
        tissue.append(Ellipse(cx, cy, rx, ry))
        if k < n - 1:
            tumour.append(
                Ellipse(
                    cx + rng.uniform(-0.2, 0.2) * rx,
                    cy,
                    rx * rng.uniform(0.3, 0.5),
                    ry * rng.uniform(0.3, 0.5),
                )
            )
    return SyntheticSlide(height, width, tuple(tissue), tuple(tumour))


def geojson(slide: SyntheticSlide, class_name: str = "tumour") -> dict:
    """The tumour ellipses as QuPath-style GeoJSON annotations (level-0 pixel coordinates)."""
    features = [
        {
            "type": "Feature",
            "id": f"tumour-{k}",
            "geometry": {"type": "Polygon", "coordinates": [e.ring()]},
            "properties": {
                "objectType": "annotation",
                "classification": {"name": class_name, "color": [200, 0, 0]},
            },
        }
        for k, e in enumerate(slide.tumour)
    ]
    return {"type": "FeatureCollection", "features": features}


def write_synthetic_slide(
    path: str | os.PathLike[str],
    slide: SyntheticSlide,
    pixel_size_um: float,
    mask_path: str | os.PathLike[str] | None = None,
    geojson_path: str | os.PathLike[str] | None = None,
    class_name: str = "tumour",
    tile: int = 256,
) -> None:
    """Write the slide as a pyramidal TIFF (JPEG tiles), and optionally its tumour as a
    pyramidal level-0 mask TIFF and as GeoJSON."""
    write_pyramid(
        path, slide.rgb, slide.height, slide.width, pixel_size_um, True, tile, "jpeg", 255
    )
    if mask_path is not None:
        write_pyramid(mask_path, slide.label, slide.height, slide.width, pixel_size_um, False, tile)
    if geojson_path is not None:
        write_text(geojson_path, json.dumps(geojson(slide, class_name)))
