"""Tests for cohortseg.inputs.pictures and their conversion: PNG and TIFF images and labels as
one-slice volumes with the sheet's pixel spacing, colour to grey, and errors naming the
subject, the file and the fix."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
from PIL import Image

from cohortseg.core.cohort import Subject, parse_spacing, read_sample_sheet
from cohortseg.core.errors import CohortsegError, InvalidInputError
from cohortseg.core.geometry import spacing_of
from cohortseg.core.io import load_nifti
from cohortseg.inputs.convert import convert_subject
from cohortseg.inputs.pictures import is_picture, read_picture
from cohortseg.viz.montage import montage_slices

CLASSES = ["organ", "shell", "tube"]


def grey(rows: int = 30, columns: int = 40) -> np.ndarray:
    """A uint8 picture whose value encodes (row, column): row × 2 + column // 8."""
    r, c = np.mgrid[:rows, :columns]
    return (r * 2 + c // 8).astype(np.uint8)


def test_a_png_is_an_x_y_1_volume_with_the_sheets_spacing(tmp_path):
    pixels = grey()
    Image.fromarray(pixels).save(tmp_path / "a.png")

    data, affine = read_picture("sub-1", str(tmp_path / "a.png"), (0.5, 0.8))

    assert data.shape == (40, 30, 1) and data.dtype == np.float32
    assert data[7, 3, 0] == pixels[3, 7]  # X along columns, Y along rows
    assert spacing_of(affine).tolist() == [0.5, 0.8, 1.0]


def test_a_picture_is_shown_upright_in_its_qc_montage(tmp_path):
    pixels = np.zeros((30, 40), np.uint8)
    pixels[2:6, 3:9] = 1  # top left as the picture is seen
    Image.fromarray(pixels).save(tmp_path / "a.png")
    data, affine = read_picture("sub-1", str(tmp_path / "a.png"), (1.0, 1.0), label=True)

    (view,) = montage_slices(data, data, affine, single_view=True)

    rows, cols = np.nonzero(view["labels"])  # row 0 at the bottom
    assert cols.max() < 10 and rows.min() >= 30 - 6


def test_a_16_bit_tiff_keeps_its_values(tmp_path):
    pixels = (np.arange(20 * 24).reshape(20, 24) * 100).astype(np.uint16)
    tifffile.imwrite(tmp_path / "a.tif", pixels)

    data, _ = read_picture("sub-1", str(tmp_path / "a.tif"), (1.0, 1.0))

    np.testing.assert_array_equal(data[..., 0], pixels.T.astype(np.float32))


def test_rgb_images_become_grey_but_colour_labels_are_refused(tmp_path):
    rgb = np.zeros((10, 12, 3), np.uint8)
    rgb[..., 0] = 100
    Image.fromarray(rgb).save(tmp_path / "rgb.png")

    data, _ = read_picture("sub-1", str(tmp_path / "rgb.png"), (1.0, 1.0))
    assert data.shape == (12, 10, 1) and np.allclose(data, 29.9)
    with pytest.raises(InvalidInputError, match="sub-1.*colour label"):
        read_picture("sub-1", str(tmp_path / "rgb.png"), (1.0, 1.0), label=True)


@pytest.mark.parametrize(
    ("spacing", "problem"),
    [(None, "no pixel spacing.*spacing_mm column"), ((0.0, 1.0), "positive numbers")],
)
def test_a_picture_without_a_good_spacing_is_refused(tmp_path, spacing, problem):
    Image.fromarray(grey()).save(tmp_path / "a.png")
    with pytest.raises(InvalidInputError, match=f"sub-1: .*a.png: .*{problem}"):
        read_picture("sub-1", str(tmp_path / "a.png"), spacing)


def test_broken_missing_and_multi_page_pictures_are_refused(tmp_path):
    (tmp_path / "broken.png").write_bytes(b"\x89PNG not really")
    with tifffile.TiffWriter(tmp_path / "stack.tif") as tif:
        for _ in range(3):
            tif.write(np.zeros((8, 8), np.uint8), photometric="minisblack")
    for name, problem in [
        ("broken.png", "cannot read the picture"),
        ("missing.png", "does not exist"),
        ("stack.tif", "3 pages: only single-page 2D TIFFs"),
    ]:
        with pytest.raises(InvalidInputError, match=problem):
            read_picture("sub-1", str(tmp_path / name), (1.0, 1.0))


def test_spacing_cells():
    assert parse_spacing("0.5") == (0.5, 0.5)
    assert parse_spacing(" 0.5, 0.8 ") == (0.5, 0.8)
    assert parse_spacing("") is None
    with pytest.raises(ValueError):
        parse_spacing("1,2,3")
    assert is_picture("a/B.PNG") and is_picture("x.tiff") and not is_picture("x.nii.gz")


def test_the_sheets_spacing_column_reaches_the_subject(tmp_path):
    sheet = tmp_path / "samples.tsv"
    sheet.write_text(
        "subject\timage\tlabel\tsplit\tspacing_mm\n"
        "s1\ta.png\ta_mask.png\ttrain\t0.5,0.8\n"
        "s2\tb.nii.gz\t\ttest\t\n"
    )
    s1, s2 = read_sample_sheet(sheet)
    assert s1.spacing_mm == (0.5, 0.8) and s2.spacing_mm is None
    sheet.write_text("subject\timage\tlabel\tsplit\tspacing_mm\ns1\ta.png\t\ttest\tsmall\n")
    with pytest.raises(CohortsegError, match="line 2 \\(s1\\): spacing_mm"):
        read_sample_sheet(sheet)


def test_convert_writes_the_picture_and_its_label_on_one_grid(tmp_path):
    label = np.zeros((30, 40), np.uint8)
    label[5:10, 5:20] = 2
    Image.fromarray(grey()).save(tmp_path / "a.png")
    Image.fromarray(label).save(tmp_path / "a_mask.png")
    source = Subject("s1", str(tmp_path / "a.png"), str(tmp_path / "a_mask.png"), "train")
    source = Subject(**{**source.__dict__, "spacing_mm": (0.5, 0.5)})
    target = Subject("s1", str(tmp_path / "c/s1.nii.gz"), str(tmp_path / "c/s1_l.nii.gz"), "train")

    row = convert_subject(source, target, CLASSES, None, 1.0)

    assert not row.get("problem") and row["image_sha256"] and row["label_sha256"]
    image, affine = load_nifti(target.image)
    labels, label_affine = load_nifti(target.label, dtype=np.uint8)
    assert image.shape == labels.shape == (40, 30, 1)
    np.testing.assert_array_equal(affine, label_affine)
    assert int((labels == 2).sum()) == 75


def test_convert_records_a_label_that_does_not_match_its_picture(tmp_path):
    Image.fromarray(grey()).save(tmp_path / "a.png")
    Image.fromarray(np.zeros((30, 41), np.uint8)).save(tmp_path / "a_mask.png")
    source = Subject(
        "s1", str(tmp_path / "a.png"), str(tmp_path / "a_mask.png"), "train", spacing_mm=(1, 1)
    )
    target = Subject("s1", str(tmp_path / "s1.nii.gz"), str(tmp_path / "s1_l.nii.gz"), "train")

    row = convert_subject(source, target, CLASSES, None, 1.0)

    assert row["kind"] == "label" and "a_mask.png" in row["file"]
    assert "41x30 pixels" in row["problem"] and "does not match" in row["problem"]
