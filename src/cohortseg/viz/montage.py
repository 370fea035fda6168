"""Slice montages: an image with its label map drawn over it, three orthogonal views per row."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402

from cohortseg.core.colours import class_colour  # noqa: E402
from cohortseg.core.errors import CohortsegError  # noqa: E402
from cohortseg.core.geometry import reorient, spacing_of  # noqa: E402
from cohortseg.core.io import load_nifti
from cohortseg.core.redact import show_path
from cohortseg.viz.figures import save_figure


def montage_slices(
    image: np.ndarray,
    labels: np.ndarray,
    affine: np.ndarray,
    overlay: np.ndarray | None = None,
    single_view: bool = False,
) -> list[dict]:
    """Three orthogonal slices through the centre of the labelled region, ready to display,
    and the same slices of ``overlay`` (a map on the image's grid, e.g. an explanation). With
    ``single_view``, a 2D image (one slice, Z = 1 after reorientation) gets its slice only
    (named ``slice``), as the other two views would be one voxel tall.

    Both volumes are first reoriented to the closest canonical (RAS) voxel order, so the views are
    axial, coronal and sagittal whatever the scanner's voxel order. Slices are laid out in the
    radiological convention: the patient's right on the viewer's left, anterior (sagittal) on
    the left, superior and anterior up.

    Returns
    -------
    list of dict
        One per view: ``name``, ``image``, ``labels`` and ``overlay`` (2D, row 0 at the bottom;
        ``overlay`` None without one), ``extent_mm`` (width, height) and ``sides`` (letters at
        the left, right, bottom and top edges).
    """
    if image.shape != labels.shape or (overlay is not None and overlay.shape != image.shape):
        raise CohortsegError(
            f"image shape {image.shape} and segmentation shape {labels.shape} differ"
            + ("" if overlay is None else f" (overlay {overlay.shape})")
        )
    image, canon_affine, _ = reorient(image, affine)
    labels, _, _ = reorient(labels, affine)
    over = reorient(overlay, affine)[0] if overlay is not None else None
    spacing = spacing_of(canon_affine)
    fg = np.argwhere(labels > 0)
    centre = ((fg.min(axis=0) + fg.max(axis=0)) // 2) if len(fg) else np.array(labels.shape) // 2
    cx, cy, cz = (int(c) for c in centre)
    # (view, 2D slices with rows = second axis, columns = first axis, spacings, edge letters)
    views = [
        ("axial", np.s_[:, :, cz], (0, 1), ("R", "L", "P", "A")),
        ("coronal", np.s_[:, cy, :], (0, 2), ("R", "L", "I", "S")),
        ("sagittal", np.s_[cx, :, :], (1, 2), ("A", "P", "I", "S")),
    ]
    if single_view and labels.shape[2] == 1:
        views = [("slice", np.s_[:, :, 0], (0, 1), ("R", "L", "P", "A"))]
    out = []
    for name, where, (col_axis, row_axis), sides in views:
        # .T: rows along the second axis; [:, ::-1]: R (or A) on the viewer's left
        img2d, lab2d = image[where].T[:, ::-1], labels[where].T[:, ::-1]
        out.append(
            {
                "name": name,
                "image": img2d,
                "labels": lab2d,
                "overlay": None if over is None else over[where].T[:, ::-1],
                "extent_mm": (
                    img2d.shape[1] * float(spacing[col_axis]),
                    img2d.shape[0] * float(spacing[row_axis]),
                ),
                "sides": sides,
            }
        )
    return out


def display_window(image: np.ndarray) -> tuple[float, float]:
    """Grey-level window of an image: its 0.5th and 99.5th percentiles."""
    finite = image[np.isfinite(image)]
    lo, hi = np.percentile(finite, [0.5, 99.5]) if finite.size else (0.0, 1.0)
    return float(lo), float(hi)


def draw_view(ax: plt.Axes, view: Mapping, window: tuple[float, float]) -> tuple:
    """Draw one view of :func:`montage_slices` in grey levels (``window``: low, high) with its
    name and side letters, in millimetres; returns the extent for overlays."""
    w, h = view["extent_mm"]
    extent = (0, w, 0, h)
    ax.imshow(
        view["image"],
        cmap="gray",
        vmin=window[0],
        vmax=window[1],
        origin="lower",
        extent=extent,
        interpolation="nearest",
    )
    ax.set_title(view["name"], color="white")
    ax.set_xticks([])
    ax.set_yticks([])
    left, right, bottom, top = view["sides"]
    style = {"color": "yellow", "fontsize": 11, "transform": ax.transAxes}
    ax.text(0.02, 0.5, left, ha="left", va="center", **style)
    ax.text(0.98, 0.5, right, ha="right", va="center", **style)
    ax.text(0.5, 0.02, bottom, ha="center", va="bottom", **style)
    ax.text(0.5, 0.98, top, ha="center", va="top", **style)
    return extent


def qc_montage(
    image: np.ndarray,
    labels: np.ndarray,
    affine: np.ndarray,
    classes: Sequence[str],
    title: str,
    path: str | os.PathLike[str],
) -> None:
    """PNG of three orthogonal slices of ``image`` (X, Y, Z) with its label map overlaid, one
    colour per class (:func:`class_colour`); of a 2D image (Z = 1), its slice alone. See
    :func:`montage_slices` for the layout."""
    views = montage_slices(image, labels, affine, single_view=True)
    fig, axes = plt.subplots(
        1, len(views), figsize=(4 * len(views), 4.6), facecolor="black", squeeze=False
    )
    window = display_window(image)
    for ax, view in zip(axes[0], views, strict=True):
        extent = draw_view(ax, view, window)
        overlay = np.zeros(view["labels"].shape + (4,))
        for value in range(1, len(classes) + 1):
            overlay[view["labels"] == value] = (*class_colour(value), 0.45)
        ax.imshow(overlay, origin="lower", extent=extent, interpolation="nearest")
    handles = [Patch(color=class_colour(v), label=c) for v, c in enumerate(classes, start=1)]
    fig.legend(
        handles=handles, loc="lower center", ncol=len(classes), frameon=False, labelcolor="white"
    )
    fig.suptitle(title, color="white")
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    save_figure(fig, path, dpi=80)


def load_image_and_segmentation(
    subject: str, image_path: str, segmentation: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A subject's (X, Y, Z) image, its uint8 segmentation and their (4, 4) affine, checked to
    share one grid (a segmentation older than its image names the shard to rerun)."""
    image, affine = load_nifti(image_path, subject)
    labels, seg_affine = load_nifti(segmentation, subject, dtype=np.uint8)
    if image.shape != labels.shape or not np.allclose(affine, seg_affine, atol=1e-3):
        raise CohortsegError(
            f"{subject}: segmentation {segmentation} is not on the grid of its image "
            f"{show_path(image_path, 'image')}: rerun its inference shard"
        )
    return image, labels, affine
