"""Compressed series decode with the pinned stack, with their geometry: every transfer syntax
the README names (JPEG 2000 lossless and lossy, JPEG-LS lossless and near-lossless, RLE, 8-bit
JPEG baseline), each made here from a synthetic oblique series. Lossless syntaxes decode
exactly; lossy ones within a bound that follows from how they were encoded:

- JPEG-LS near-lossless with NEAR = 2: no pixel differs by more than 2 (what NEAR means);
- JPEG 2000 in fixed-quality mode at 50 dB PSNR (12-bit peak 4095): the encoder aims at the
  PSNR, so the decoded image must reach 49 dB (rate control lands within a fraction of a dB);
- 8-bit JPEG baseline at quality 95: IJG's luminance quantisation steps scaled to 10 % (1 to
  5 grey levels), each DCT coefficient off by at most half a step, so the RMS error is about a
  step over sqrt(12), under 2 grey levels: at most 3 RMS and 16 at any pixel is asserted.

JPEG 2000 and JPEG baseline are encoded with imagecodecs (pinned for whole-slide images;
pydicom has no JPEG 2000 or JPEG baseline encoder among the pinned packages) and decoded by
pydicom's Pillow plugin; JPEG-LS and RLE are encoded by pydicom's own ``Dataset.compress``
(pyjpegls, pydicom's RLE encoder) — independent encoder and decoder libraries except JPEG-LS
(pyjpegls is the only pinned JPEG-LS codec)."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
from pydicom.encaps import encapsulate
from pydicom.uid import (
    JPEG2000,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
)

from cohortseg.dicom.series import find_series, read_series, select_series
from cohortseg.dicom.writers import along_normal, write_series
from cohortseg.inputs.demo import demo_phantom

imagecodecs = pytest.importorskip("imagecodecs")


def stored_series(tmp_path, bits: int):
    """An oblique series stored as unsigned ``bits``-bit values (12: MR/CT-like with a rescale
    intercept; 8: as 8-bit JPEG needs), uncompressed; returns its folder."""
    image, _, affine = demo_phantom([40, 32, 10], [1.7, 1.9, 2.4], 6)
    affine, (image,) = along_normal(affine, image)
    folder = tmp_path / "plain"
    paths = write_series(folder, image, affine, seed=6)
    low, high = int(image.min()), int(image.max())
    for path in paths:
        ds = pydicom.dcmread(path)
        values = ds.pixel_array.astype(np.int32)
        if bits == 8:
            stored = np.round((values - low) * 255 / (high - low)).astype(np.uint8)
            ds.RescaleSlope, ds.RescaleIntercept = f"{(high - low) / 255:.10g}", str(low)
        else:
            stored = np.clip(values - low, 0, 4095).astype(np.uint16)
            ds.RescaleSlope, ds.RescaleIntercept = "1", str(low)
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = (8, 8, 7) if bits == 8 else (16, 12, 11)
        ds.PixelRepresentation = 0
        ds.PixelData = stored.tobytes()
        ds["PixelData"].VR = "OB" if bits == 8 else "OW"
        ds.save_as(path, enforce_file_format=True)
    return folder


def encapsulated(ds, syntax, frame: bytes, method: str | None):
    ds.PixelData = encapsulate([frame])
    ds["PixelData"].VR = "OB"
    ds.file_meta.TransferSyntaxUID = syntax
    if method:
        ds.LossyImageCompression = "01"
        ds.LossyImageCompressionMethod = method


def compress(ds, syntax) -> None:
    """``ds``'s pixel data in ``syntax``."""
    pixels = ds.pixel_array
    if syntax in (RLELossless, JPEGLSLossless):
        ds.compress(syntax)
    elif syntax == JPEGLSNearLossless:
        ds.compress(syntax, jls_error=2)
        ds.LossyImageCompression = "01"
    elif syntax == JPEG2000Lossless:
        frame = imagecodecs.jpeg2k_encode(
            pixels, codecformat="J2K", reversible=True, bitspersample=12
        )
        encapsulated(ds, syntax, frame, None)
    elif syntax == JPEG2000:
        frame = imagecodecs.jpeg2k_encode(
            pixels, level=50, codecformat="J2K", reversible=False, bitspersample=12
        )
        encapsulated(ds, syntax, frame, "ISO_15444_1")
    elif syntax == JPEGBaseline8Bit:
        frame = imagecodecs.jpeg8_encode(pixels, level=95)
        encapsulated(ds, syntax, frame, "ISO_10918_1")
    else:  # pragma: no cover
        raise AssertionError(syntax)


def convert(folder):
    return read_series(select_series(find_series(folder)[0], None), 0.1)


CASES = [
    (RLELossless, 12, "exact"),
    (JPEGLSLossless, 12, "exact"),
    (JPEG2000Lossless, 12, "exact"),
    (JPEGLSNearLossless, 12, "near 2"),
    (JPEG2000, 12, "psnr 49"),
    (JPEGBaseline8Bit, 8, "jpeg 95"),
]


@pytest.mark.parametrize("syntax, bits, bound", CASES, ids=[c[0].name for c in CASES])
def test_compressed_series_decode_with_their_geometry(tmp_path, syntax, bits, bound):
    folder = stored_series(tmp_path, bits)
    plain = convert(folder)
    for path in folder.iterdir():
        ds = pydicom.dcmread(path)
        compress(ds, syntax)
        ds.save_as(path, enforce_file_format=True)
    assert all(pydicom.dcmread(p).file_meta.TransferSyntaxUID == syntax for p in folder.iterdir())
    decoded = convert(folder)
    assert np.abs(decoded.affine - plain.affine).max() < 1e-9
    assert decoded.data.shape == plain.data.shape
    slope = float(pydicom.dcmread(next(folder.iterdir())).RescaleSlope)
    error = (decoded.data - plain.data) / slope  # in stored grey levels
    if bound == "exact":
        np.testing.assert_array_equal(decoded.data, plain.data)
    elif bound == "near 2":
        assert 0 < np.abs(error).max() <= 2
    elif bound == "psnr 49":
        rmse = float(np.sqrt(np.mean(error**2)))
        assert 0 < rmse and 20 * np.log10(4095 / rmse) >= 49
    else:
        assert 0 < np.sqrt(np.mean(error**2)) <= 3 and np.abs(error).max() <= 16
