"""Surface meshes of label maps: marching cubes in world coordinates, Taubin smoothing, PLY/STL.

Vertices come out of :func:`surface_mesh` in the NIfTI world frame (scanner RAS+, mm). Files are
written in LPS (x = -R, y = -A, z = S, mm), the convention of DICOM, ITK and 3D Slicer's model
files, with ``SPACE=LPS`` in the header, which 3D Slicer (>= 4.11) reads: the mesh opens on top
of the image it came from without any manual choice of coordinate system.
"""

from __future__ import annotations

import logging
import os
import struct
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import scipy.sparse
from skimage.measure import marching_cubes

from cohortseg.core.errors import CohortsegError
from cohortseg.core.geometry import ras_to_lps, voxel_box
from cohortseg.core.io import atomic_write, load_nifti

log = logging.getLogger(__name__)


FORMATS = ("ply", "stl")


def surface_mesh(
    mask: np.ndarray, affine: np.ndarray, smoothing_iterations: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Triangle mesh of the boundary of a binary mask, in world coordinates.

    Marching cubes at level 0.5 on the mask padded by one background voxel, so the surface is
    closed even where the mask touches the volume's edge; faces are oriented with normals
    pointing out of the mask whatever the handedness of ``affine``.

    Parameters
    ----------
    mask
        (X, Y, Z) boolean array.
    affine
        (4, 4) voxel-to-world matrix (scanner RAS+, mm).
    smoothing_iterations
        Taubin smoothing passes (0: the raw marching-cubes surface).

    Returns
    -------
    vertices
        (V, 3) float64 world coordinates (RAS+, mm); (0, 3) for an empty mask.
    faces
        (F, 3) int64 vertex indices; (0, 3) for an empty mask.
    """
    mask = np.asarray(mask, dtype=bool)
    if not mask.any():
        return np.zeros((0, 3)), np.zeros((0, 3), dtype=np.int64)
    lo, hi = voxel_box(mask)
    crop = np.pad(mask[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]], 1).astype(np.float32)
    verts, faces, _, _ = marching_cubes(crop, level=0.5, allow_degenerate=False)
    verts = verts.astype(np.float64) + (lo - 1)  # voxel indices of the uncropped mask
    faces = faces.astype(np.int64)
    affine = np.asarray(affine, dtype=np.float64)
    world = verts @ affine[:3, :3].T + affine[:3, 3]
    if signed_volume(world, faces) < 0:  # a left-handed affine turns the faces inside out
        faces = faces[:, ::-1].copy()
    if smoothing_iterations:
        world = taubin_smooth(world, faces, smoothing_iterations)
    return world, faces


def taubin_smooth(
    vertices: np.ndarray,
    faces: np.ndarray,
    iterations: int,
    lam: float = 0.5,
    mu: float = -0.53,
) -> np.ndarray:
    """Taubin (lambda/mu) smoothing with uniform Laplacian weights.

    Each iteration moves every vertex ``lam`` of the way towards the mean of its neighbours, then
    ``-mu`` of the way back: this removes the voxel staircase without the shrinkage of plain
    Laplacian smoothing (Taubin, SIGGRAPH 1995). Returns new (V, 3) vertices.
    """
    n = len(vertices)
    if n == 0 or iterations <= 0:
        return np.asarray(vertices, dtype=np.float64).copy()
    edges = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    edges = np.concatenate([edges, edges[:, ::-1]])
    adjacency = scipy.sparse.coo_matrix(
        (np.ones(len(edges)), (edges[:, 0], edges[:, 1])), shape=(n, n)
    ).tocsr()
    adjacency.data[:] = 1.0  # an edge shared by two faces counts once
    degree = np.asarray(adjacency.sum(axis=1)).ravel()
    mean_of_neighbours = scipy.sparse.diags(1.0 / np.maximum(degree, 1)) @ adjacency
    v = np.asarray(vertices, dtype=np.float64).copy()
    for _ in range(iterations):
        v += lam * (mean_of_neighbours @ v - v)
        v += mu * (mean_of_neighbours @ v - v)
    return v


def surface_area_mm2(vertices: np.ndarray, faces: np.ndarray) -> float:
    """Total area of a triangle mesh (mm² for vertices in mm)."""
    if len(faces) == 0:
        return 0.0
    a, b, c = (vertices[faces[:, k]] for k in range(3))
    return float(0.5 * np.linalg.norm(np.cross(b - a, c - a), axis=1).sum())


def signed_volume(vertices: np.ndarray, faces: np.ndarray) -> float:
    """Signed volume enclosed by a closed mesh (mm³ for mm); positive when normals point out."""
    if len(faces) == 0:
        return 0.0
    a, b, c = (vertices[faces[:, k]] for k in range(3))
    return float(np.einsum("ij,ij->i", a, np.cross(b, c)).sum() / 6.0)


def write_mesh(
    path: str | os.PathLike[str], vertices_ras: np.ndarray, faces: np.ndarray, name: str = ""
) -> None:
    """Write a mesh given in RAS+ mm as binary little-endian PLY or binary STL (by the file's
    extension), in LPS mm with ``SPACE=LPS`` in the header; atomically.

    Normals keep pointing out: RAS → LPS is a rotation (two axes flipped), not a reflection.
    """
    fmt = os.fspath(path).rsplit(".", 1)[-1].lower()
    vertices = ras_to_lps(vertices_ras)
    faces = np.asarray(faces, dtype=np.int64)
    if fmt == "ply":
        data = _ply_bytes(vertices, faces, name)
    elif fmt == "stl":
        data = _stl_bytes(vertices, faces, name)
    else:
        raise CohortsegError(f"{path}: mesh format must be one of {FORMATS} (meshes.format)")
    with atomic_write(path) as tmp:
        tmp.write_bytes(data)


def _ply_bytes(vertices: np.ndarray, faces: np.ndarray, name: str) -> bytes:
    header = [
        "ply",
        "format binary_little_endian 1.0",
        "comment SPACE=LPS",
        "comment units: mm; coordinates: LPS (x = -R, y = -A, z = S of the NIfTI world)",
    ]
    if name:
        header.append(f"comment {name}")
    header += [
        f"element vertex {len(vertices)}",
        "property float x",
        "property float y",
        "property float z",
        f"element face {len(faces)}",
        "property list uchar int vertex_indices",
        "end_header",
    ]
    face_records = np.zeros(len(faces), dtype=[("n", "u1"), ("idx", "<i4", (3,))])
    face_records["n"] = 3
    face_records["idx"] = faces
    return (
        ("\n".join(header) + "\n").encode("ascii")
        + vertices.astype("<f4").tobytes()
        + face_records.tobytes()
    )


def _stl_bytes(vertices: np.ndarray, faces: np.ndarray, name: str) -> bytes:
    # The 80-byte header must not start with "solid" (readers would take the file for ASCII STL).
    header = f"cohortseg SPACE=LPS mm {name}".encode("ascii", "replace")[:80].ljust(80, b" ")
    records = np.zeros(
        len(faces), dtype=[("normal", "<f4", (3,)), ("v", "<f4", (3, 3)), ("attr", "<u2")]
    )
    if len(faces):
        tri = vertices[faces]
        normal = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
        norm = np.linalg.norm(normal, axis=1, keepdims=True)
        records["normal"] = normal / np.where(norm > 0, norm, 1.0)
        records["v"] = tri
    return header + struct.pack("<I", len(faces)) + records.tobytes()


def read_mesh(path: str | os.PathLike[str]) -> tuple[np.ndarray, np.ndarray, str]:
    """Read a mesh written by :func:`write_mesh`.

    Returns the vertices exactly as stored (LPS mm), the (F, 3) faces (STL: three vertices of its
    own per face) and the header text.
    """
    data = Path(path).read_bytes()
    if data.startswith(b"ply\n"):
        end = data.index(b"end_header\n") + len(b"end_header\n")
        header = data[:end].decode("ascii")
        counts = {
            line.split()[1]: int(line.split()[2])
            for line in header.splitlines()
            if line.startswith("element ")
        }
        nv, nf = counts["vertex"], counts["face"]
        vertices = np.frombuffer(data, "<f4", nv * 3, end).reshape(nv, 3).astype(np.float64)
        faces = np.frombuffer(data, [("n", "u1"), ("idx", "<i4", (3,))], nf, end + nv * 12)[
            "idx"
        ].astype(np.int64)
        return vertices, faces, header
    header = data[:80].decode("ascii", "replace")
    (nf,) = struct.unpack("<I", data[80:84])
    records = np.frombuffer(
        data, [("normal", "<f4", (3,)), ("v", "<f4", (3, 3)), ("attr", "<u2")], nf, 84
    )
    vertices = records["v"].reshape(-1, 3).astype(np.float64)
    return vertices, np.arange(3 * nf, dtype=np.int64).reshape(nf, 3), header


def subject_meshes(
    subject: str,
    segmentation: str | os.PathLike[str],
    classes: Sequence[str],
    outputs: Mapping[str, str],
    smoothing_iterations: int,
) -> None:
    """Write one mesh per class of a subject's segmentation (``outputs``: class name → path).

    A class absent from the segmentation gets an empty mesh (no vertices), so that every
    expected file exists; it is logged as a warning.
    """
    labels, affine = load_nifti(segmentation, subject, dtype=np.uint8)
    for value, name in enumerate(classes, start=1):
        vertices, faces = surface_mesh(labels == value, affine, smoothing_iterations)
        if not len(faces):
            log.warning("%s: class %s is empty: writing an empty mesh", subject, name)
        write_mesh(outputs[name], vertices, faces, name=f"{subject} {name}")
        log.info(
            "%s: %s: %d vertices, %d faces -> %s",
            subject,
            name,
            len(vertices),
            len(faces),
            outputs[name],
        )
