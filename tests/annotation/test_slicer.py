"""Slicer segmentation files: geometry round-trips, segment metadata, segments mapped by name."""

from __future__ import annotations

import nrrd
import numpy as np
import pytest

from cohortseg.annotation.slicer import read_seg_nrrd, write_seg_nrrd
from cohortseg.core.errors import InvalidInputError
from cohortseg.inputs.demo import demo_phantom

CLASSES = ["organ", "shell", "tube"]


@pytest.fixture
def phantom():
    image, label, affine = demo_phantom([20, 18, 12], [1.5, 1.7, 2.5], seed=3)
    return image, label, affine


def test_round_trip_keeps_labels_and_affine(tmp_path, phantom):
    _, label, affine = phantom
    path = tmp_path / "sub.seg.nrrd"
    write_seg_nrrd(path, label, affine, CLASSES)
    labels, back = read_seg_nrrd(path, CLASSES)
    np.testing.assert_array_equal(labels, label)
    np.testing.assert_allclose(back, affine, atol=1e-9)


def test_header_is_what_slicer_reads(tmp_path, phantom):
    """LPS space; one segment per class with name, colour, label value, layer and extent."""
    _, label, affine = phantom
    path = tmp_path / "sub.seg.nrrd"
    write_seg_nrrd(path, label, affine, CLASSES)
    data, header = nrrd.read(str(path))
    assert header["space"] == "left-posterior-superior"
    assert data.dtype == np.uint8 and data.shape == label.shape
    # LPS world of voxel (1, 2, 3) is the RAS world with x and y negated
    ijk = np.array([1, 2, 3])
    lps = header["space origin"] + ijk @ header["space directions"]
    ras = affine[:3, :3] @ ijk + affine[:3, 3]
    np.testing.assert_allclose(lps, ras * [-1, -1, 1], atol=1e-9)
    for k, name in enumerate(CLASSES):
        assert header[f"Segment{k}_Name"] == name
        assert header[f"Segment{k}_LabelValue"] == str(k + 1)
        assert header[f"Segment{k}_Layer"] == "0"
        assert len(header[f"Segment{k}_Color"].split()) == 3
        extent = [int(v) for v in header[f"Segment{k}_Extent"].split()]
        idx = np.argwhere(label == k + 1)
        assert extent == [v for a in range(3) for v in (idx[:, a].min(), idx[:, a].max())]


def test_segments_map_to_classes_by_name(tmp_path, phantom):
    """Slicer renumbers and reorders segments; the name decides the class."""
    _, label, affine = phantom
    path = tmp_path / "sub.seg.nrrd"
    write_seg_nrrd(path, label, affine, CLASSES)
    data, header = nrrd.read(str(path))
    # as if the reviewer's Slicer stored "tube" as value 1 and "organ" as value 3, names in caps
    swapped = data.copy()
    swapped[data == 1], swapped[data == 3] = 3, 1
    header["Segment0_LabelValue"], header["Segment2_LabelValue"] = "3", "1"
    header["Segment0_Name"] = "Organ"
    nrrd.write(str(path), swapped, header)
    labels, _ = read_seg_nrrd(path, CLASSES)
    np.testing.assert_array_equal(labels, label)


def test_unknown_segment_name_is_an_error_naming_it(tmp_path, phantom):
    _, label, affine = phantom
    path = tmp_path / "sub.seg.nrrd"
    write_seg_nrrd(path, label, affine, CLASSES)
    data, header = nrrd.read(str(path))
    header["Segment1_Name"] = "Segment_2"
    nrrd.write(str(path), data, header)
    with pytest.raises(InvalidInputError, match="segment 'Segment_2' is not a class"):
        read_seg_nrrd(path, CLASSES, subject="sub-01")


def test_layers_of_a_4d_file(tmp_path, phantom):
    """Overlapping segments are stored by Slicer in separate layers (a 4D file)."""
    _, label, affine = phantom
    path = tmp_path / "sub.seg.nrrd"
    write_seg_nrrd(path, label, affine, CLASSES)
    data, header = nrrd.read(str(path))
    layers = np.stack([np.where(data == 3, 0, data), (data == 3).astype(np.uint8)])
    header.update(
        {
            "dimension": 4,
            "kinds": ["list", "domain", "domain", "domain"],
            "space directions": np.vstack([np.full(3, np.nan), header["space directions"]]),
            "Segment2_Layer": "1",
            "Segment2_LabelValue": "1",
        }
    )
    nrrd.write(str(path), layers, header)
    labels, back = read_seg_nrrd(path, CLASSES)
    np.testing.assert_array_equal(labels, label)
    np.testing.assert_allclose(back, affine, atol=1e-9)
