"""Surface meshes: world placement (bounds against the label's world box), orientation of the
faces, smoothing, and the PLY/STL files in LPS with SPACE=LPS for 3D Slicer."""

from __future__ import annotations

import math

import numpy as np
import pytest

from cohortseg.core.errors import CohortsegError
from cohortseg.core.geometry import ras_to_lps, world_bounding_box
from cohortseg.core.io import save_nifti
from cohortseg.evaluation.meshes import (
    read_mesh,
    signed_volume,
    subject_meshes,
    surface_area_mm2,
    surface_mesh,
    write_mesh,
)
from cohortseg.inputs.demo import demo_phantom


def sphere(radius_mm: float, spacing: float) -> tuple[np.ndarray, np.ndarray]:
    n = int(2 * radius_mm / spacing) + 6
    c = (np.arange(n) - (n - 1) / 2) * spacing
    x, y, z = np.meshgrid(c, c, c, indexing="ij")
    affine = np.diag([spacing, spacing, spacing, 1.0])
    affine[:3, 3] = -(n - 1) / 2 * spacing
    return x**2 + y**2 + z**2 <= radius_mm**2, affine


@pytest.fixture(scope="module")
def phantom():
    """A demo phantom: oblique affine with permuted/flipped axes, anisotropic spacing."""
    _, label, affine = demo_phantom([40, 36, 28], [1.5, 1.5, 2.2], seed=7)
    return label, affine


@pytest.mark.parametrize("fmt", ["ply", "stl"])
@pytest.mark.parametrize("value", [1, 2, 3])
def test_mesh_file_bounds_match_the_labels_world_box_within_a_voxel(tmp_path, phantom, fmt, value):
    label, affine = phantom
    mask = label == value
    vertices, faces = surface_mesh(mask, affine, smoothing_iterations=10)
    path = tmp_path / f"mesh.{fmt}"
    write_mesh(path, vertices, faces)
    stored, _, header = read_mesh(path)
    assert "SPACE=LPS" in header
    ras = ras_to_lps(stored)  # back from the file's LPS to the NIfTI's RAS
    lo, hi = world_bounding_box(mask, affine)
    voxel = float(np.sqrt((affine[:3, :3] ** 2).sum(axis=0)).max())
    assert np.all(np.abs(ras.min(axis=0) - lo) < voxel), (ras.min(axis=0), lo)
    assert np.all(np.abs(ras.max(axis=0) - hi) < voxel), (ras.max(axis=0), hi)


def test_files_store_lps_coordinates(tmp_path):
    vertices = np.array([[10.0, 20.0, 30.0], [11.0, 20.0, 30.0], [10.0, 21.0, 30.0]])
    faces = np.array([[0, 1, 2]])
    for fmt in ("ply", "stl"):
        write_mesh(tmp_path / f"t.{fmt}", vertices, faces)
        stored, stored_faces, _ = read_mesh(tmp_path / f"t.{fmt}")
        np.testing.assert_allclose(
            stored[stored_faces[0]], [[-10, -20, 30], [-11, -20, 30], [-10, -21, 30]]
        )


@pytest.mark.parametrize("flip", [False, True])
def test_faces_point_outwards_and_enclose_the_masks_volume(flip):
    mask, affine = sphere(8.0, 1.0)
    if flip:  # a left-handed voxel-to-world matrix, as in many scanners' files
        affine = affine @ np.diag([-1.0, 1.0, 1.0, 1.0])
    vertices, faces = surface_mesh(mask, affine, smoothing_iterations=10)
    volume = mask.sum() * abs(np.linalg.det(affine[:3, :3]))
    assert signed_volume(vertices, faces) == pytest.approx(volume, rel=0.03)


def test_smoothing_removes_the_voxel_staircase_from_the_area():
    mask, affine = sphere(10.0, 1.0)
    true_area = 4 * math.pi * 10.0**2
    raw = surface_area_mm2(*surface_mesh(mask, affine, 0))
    smooth = surface_area_mm2(*surface_mesh(mask, affine, 10))
    assert raw / true_area > 1.05
    assert smooth / true_area == pytest.approx(1.0, abs=0.03)


def test_ply_and_stl_layouts(tmp_path):
    mask, affine = sphere(4.0, 1.0)
    vertices, faces = surface_mesh(mask, affine)
    write_mesh(tmp_path / "m.ply", vertices, faces, name="sub-01 organ")
    data = (tmp_path / "m.ply").read_bytes()
    header = data[: data.index(b"end_header\n") + 11].decode()
    assert header.startswith("ply\nformat binary_little_endian 1.0\ncomment SPACE=LPS\n")
    assert f"element vertex {len(vertices)}" in header
    assert len(data) == len(header) + 12 * len(vertices) + 13 * len(faces)
    write_mesh(tmp_path / "m.stl", vertices, faces)
    data = (tmp_path / "m.stl").read_bytes()
    assert not data.startswith(b"solid") and b"SPACE=LPS" in data[:80]
    assert len(data) == 84 + 50 * len(faces)
    with pytest.raises(CohortsegError, match="meshes.format"):
        write_mesh(tmp_path / "m.obj", vertices, faces)


def test_subject_meshes_writes_every_class_even_an_empty_one(tmp_path):
    label = np.zeros((10, 10, 10), np.uint8)
    label[2:6, 3:7, 4:8] = 1
    save_nifti(tmp_path / "seg.nii.gz", label, np.eye(4))
    outputs = {"organ": str(tmp_path / "organ.ply"), "shell": str(tmp_path / "shell.ply")}
    subject_meshes("sub-01", tmp_path / "seg.nii.gz", ["organ", "shell"], outputs, 0)
    organ, organ_faces, _ = read_mesh(outputs["organ"])
    assert len(organ_faces) > 0
    np.testing.assert_allclose(ras_to_lps(organ).min(axis=0), [1.5, 2.5, 3.5])
    shell, shell_faces, _ = read_mesh(outputs["shell"])
    assert shell.shape == (0, 3) and shell_faces.shape == (0, 3)
