"""2D pictures (PNG and TIFF) as one-slice volumes: an image or label read as an (X, Y, 1)
array with the (4, 4) affine of its pixel spacing, so that the volume pipeline takes it as it
takes a single-slice NIfTI (the ``convert`` stage writes it as one)."""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from cohortseg.core.errors import InvalidInputError

PICTURE_SUFFIXES = (".png", ".tif", ".tiff")


#: Slice thickness of a picture, mm: it has none, and volumes (mL) are areas (mm²) / 1000.
PICTURE_THICKNESS_MM = 1.0


def is_picture(path: str | os.PathLike[str] | None) -> bool:
    """Whether ``path`` names a PNG or TIFF picture (by its suffix, case-insensitive)."""
    return bool(path) and str(path).lower().endswith(PICTURE_SUFFIXES)


def picture_affine(spacing_mm: Sequence[float]) -> np.ndarray:
    """The (4, 4) affine of a picture's (X, Y, 1) grid: voxel (column, row) at
    (−column × sx, −row × sy, 0) mm, the way DICOM lays an axial slice (columns towards the
    patient's left, rows towards posterior), so that QC montages show the picture upright;
    :data:`PICTURE_THICKNESS_MM` along the slice normal."""
    sx, sy = (float(s) for s in spacing_mm)
    return np.diag([-sx, -sy, PICTURE_THICKNESS_MM, 1.0])


def _read_pixels(path: str) -> np.ndarray:
    """The pixel array of a PNG (Pillow) or TIFF (tifffile): (rows, columns) or (rows,
    columns, channels); palette PNGs give their indices."""
    if path.lower().endswith(".png"):
        from PIL import Image

        with Image.open(path) as img:
            if img.mode in ("LA", "PA"):  # grey or palette with alpha: the alpha is dropped
                img = img.convert(img.mode[0])
            return np.asarray(img)
    import tifffile

    with tifffile.TiffFile(path) as tif:
        if len(tif.pages) > 1:
            raise ValueError(
                f"{len(tif.pages)} pages: only single-page 2D TIFFs are read "
                "(give a volume as NIfTI)"
            )
        return tif.pages[0].asarray()


def read_picture(
    subject: str, path: str, spacing_mm: Sequence[float] | None, label: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Read a 2D PNG or TIFF as a one-slice volume.

    Parameters
    ----------
    subject
        The subject id (for errors).
    path
        The picture.
    spacing_mm
        Pixel spacing (columns, rows), mm: the sample sheet's ``spacing_mm``.
    label
        A label map: one channel of class values (uint8), never converted from colour.

    Returns
    -------
    data
        (X, Y, 1) array, X along the picture's columns, Y along its rows: float32 grey levels
        (RGB and RGBA images converted to luma, 0.299 R + 0.587 G + 0.114 B) or uint8 labels.
    affine
        (4, 4) voxel-to-world matrix, mm (:func:`picture_affine`).

    Raises
    ------
    InvalidInputError
        If the file is missing or unreadable, not 2D, a colour label, or ``spacing_mm`` is
        missing or not positive.
    """
    if not spacing_mm:
        raise InvalidInputError(
            subject,
            path,
            "a PNG or TIFF has no pixel spacing here: give it in the sample sheet's "
            "spacing_mm column (mm per pixel: one number, or columns,rows)",
        )
    if len(spacing_mm) != 2 or not all(np.isfinite(s) and s > 0 for s in spacing_mm):
        raise InvalidInputError(
            subject, path, f"spacing_mm {list(spacing_mm)} must be 1 or 2 positive numbers (mm)"
        )
    if not os.path.exists(path):
        raise InvalidInputError(subject, path, "file does not exist")
    try:
        pixels = _read_pixels(path)
    except Exception as exc:  # Pillow and tifffile raise many types for a broken file
        raise InvalidInputError(subject, path, f"cannot read the picture: {exc}") from exc
    if pixels.dtype == bool:  # 1-bit pictures
        pixels = pixels.astype(np.uint8)
    if pixels.ndim == 3 and pixels.shape[2] in (3, 4) and not label:
        rgb = pixels[..., :3].astype(np.float32)
        pixels = rgb @ np.array([0.299, 0.587, 0.114], np.float32)
    if pixels.ndim != 2:
        what = "a colour label: labels must be one channel of class values" if label else "not 2D"
        raise InvalidInputError(
            subject, path, f"pixel array of shape {tuple(pixels.shape)} is {what}"
        )
    if label:
        if not np.issubdtype(pixels.dtype, np.integer) or pixels.min() < 0 or pixels.max() > 255:
            raise InvalidInputError(
                subject, path, "label values must be integers 0..255 (class values)"
            )
        data = pixels.astype(np.uint8)
    else:
        data = pixels.astype(np.float32)
    return np.ascontiguousarray(data.T[:, :, None]), picture_affine(spacing_mm)
