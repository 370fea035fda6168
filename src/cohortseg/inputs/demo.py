"""The synthetic demo cohort: phantom subjects with organs, a shell and a tube under oblique,
anisotropic, permuted and flipped affines, with bias field and noise (no download needed)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from cohortseg.core.cohort import Subject, demo_multi_frame_subject
from cohortseg.core.errors import CohortsegError
from cohortseg.core.io import save_nifti


def demo_affine(
    rng: np.random.Generator,
    shape: Sequence[int],
    spacing_mm: Sequence[float],
    in_plane: bool = False,
) -> np.ndarray:
    """A random oblique voxel-to-world affine for a volume of ``shape`` centred near the origin.

    The voxel axes are permuted and flipped at random (as scanners store LPS, RAS, axial or
    sagittal), then rotated by up to 20 degrees about a random axis; spacing is jittered ±10 %.
    With ``in_plane`` (2D phantoms) only the first two axes are flipped and the rotation is
    about the third axis, so that voxel axis 2 stays the world's S axis (the slice normal).
    """
    spacing = np.asarray(spacing_mm, float) * rng.uniform(0.9, 1.1, 3)
    perm = np.eye(3)[:, rng.permutation(3)] if rng.random() < 0.3 else np.eye(3)
    flips = np.diag(rng.choice([-1.0, 1.0], 3))
    axis = rng.normal(size=3)
    if in_plane:
        perm, flips[2, 2], axis = np.eye(3), 1.0, np.array([0.0, 0.0, 1.0])
    axis /= np.linalg.norm(axis)
    angle = np.deg2rad(rng.uniform(0, 20))
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    rot = np.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * (k @ k)
    linear = rot @ perm @ flips @ np.diag(spacing)
    centre = (np.asarray(shape, float) - 1) / 2
    affine = np.eye(4)
    affine[:3, :3] = linear
    affine[:3, 3] = -linear @ centre + rng.uniform(-5, 5, 3)
    return affine


def demo_phantom(
    shape: Sequence[int], spacing_mm: Sequence[float], seed: int, in_plane: bool = False
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Synthesise one phantom subject (``in_plane``: see :func:`demo_affine`).

    Structures are defined in world coordinates (mm) and sampled at voxel centres through an
    oblique affine: a body ellipsoid (no label), an organ ellipsoid (class 1), a shell around a
    fluid-filled core (class 2) and an oblique tube (class 3), each with its own contrast, under a
    smooth multiplicative bias field and Gaussian noise.

    Returns
    -------
    image
        int16 (X, Y, Z) intensities.
    label
        uint8 (X, Y, Z) label map, 0 = background.
    affine
        (4, 4) voxel-to-world matrix (mm).
    """
    rng = np.random.default_rng(seed)
    affine = demo_affine(rng, shape, spacing_mm, in_plane)
    extent = np.abs(affine[:3, :3]) @ np.asarray(shape, float)
    h = float(extent.min()) / 2  # half the smallest field of view, in mm

    def axis_coords(axis: int) -> list[np.ndarray]:
        idx = np.arange(shape[axis], dtype=np.float32)
        view = [1, 1, 1]
        view[axis] = -1
        return [(affine[c, axis] * idx).reshape(view).astype(np.float32) for c in range(3)]

    per_axis = [axis_coords(a) for a in range(3)]
    world = [
        per_axis[0][c] + per_axis[1][c] + per_axis[2][c] + np.float32(affine[c, 3])
        for c in range(3)
    ]

    def ellipsoid(centre: np.ndarray, radii: np.ndarray) -> np.ndarray:
        return sum(((world[c] - centre[c]) / radii[c]) ** 2 for c in range(3)) <= 1.0

    def jitter(scale: float) -> np.ndarray:
        return rng.uniform(-scale, scale, 3) * h

    image = np.zeros(np.broadcast_shapes(*(w.shape for w in world)), np.float32)
    label = np.zeros(image.shape, np.uint8)
    body = ellipsoid(np.zeros(3), np.array([0.92, 0.85, 0.9]) * h)
    image[body] = 300

    shell_c = np.array([0.38, -0.12, 0.08]) * h + jitter(0.05)
    r_out = 0.34 * h * rng.uniform(0.9, 1.1)
    outer = ellipsoid(shell_c, np.array([1.0, 0.9, 1.1]) * r_out)
    inner = ellipsoid(shell_c, np.array([1.0, 0.9, 1.1]) * r_out * 0.6)
    image[outer] = 130
    label[outer] = 2
    image[inner] = 480
    label[inner] = 0

    organ_c = np.array([-0.33, 0.12, -0.05]) * h + jitter(0.05)
    organ = ellipsoid(organ_c, np.array([0.3, 0.24, 0.36]) * h * rng.uniform(0.85, 1.15, 3))
    image[organ] = 720
    label[organ] = 1

    p0 = np.array([0.0, -0.35, 0.0]) * h + jitter(0.05)
    direction = np.array([0.3, 0.5, 1.0]) + rng.uniform(-0.2, 0.2, 3)
    direction /= np.linalg.norm(direction)
    rel = [world[c] - np.float32(p0[c]) for c in range(3)]
    cross = [
        rel[1] * direction[2] - rel[2] * direction[1],
        rel[2] * direction[0] - rel[0] * direction[2],
        rel[0] * direction[1] - rel[1] * direction[0],
    ]
    tube = (cross[0] ** 2 + cross[1] ** 2 + cross[2] ** 2 <= (0.11 * h) ** 2) & body
    image[tube] = 1000
    label[tube] = 3

    coeffs = rng.uniform(-0.15, 0.15, 3)
    bias = np.exp(sum(np.float32(coeffs[c]) * world[c] / np.float32(h) for c in range(3)))
    image *= bias
    image += rng.normal(0, 25, image.shape).astype(np.float32)
    return np.clip(np.rint(image), -32768, 32767).astype(np.int16), label, affine


def demo_phantom_2d(
    shape: Sequence[int], spacing_mm: Sequence[float], seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Synthesise one 2D phantom subject: the middle slice of a 3D phantom whose affine is
    oblique in-plane only (:func:`demo_phantom` with ``in_plane``).

    The slice is ``shape[:2]`` pixels (``shape[2]`` is not used: the phantom is as deep as it
    is wide, so that its structures fill the slice as they fill a volume) of ``spacing_mm[:2]``,
    ``spacing_mm[2]`` thick (each jittered as in 3D).

    Returns
    -------
    image, label
        int16 and uint8 (X, Y, 1) arrays.
    affine
        (4, 4) voxel-to-world matrix (mm) of the slice.
    """
    depth = max(shape[0], shape[1])
    image, label, affine = demo_phantom([shape[0], shape[1], depth], spacing_mm, seed, True)
    k = depth // 2
    shift = np.eye(4)
    shift[2, 3] = k
    return image[:, :, k : k + 1], label[:, :, k : k + 1], affine @ shift


def write_demo_subject(subject: Subject, demo: Mapping) -> None:
    """Synthesise the demo subject and write its image (and label, if it has one).

    With ``demo.format: dicom`` the image is an oblique MR series in the folder
    ``subject.image`` (one file per slice; one multi-frame object for
    :func:`~cohortseg.core.cohort.demo_multi_frame_subject`), carrying synthetic patient and
    institution attributes (:data:`~cohortseg.dicom.writers.DEMO_PHI`) that must never reach the
    results; the label is written on the grid that series converts to. With ``demo.dims: 2``
    image and label are single-slice (X, Y, 1) NIfTI (:func:`demo_phantom_2d`).
    """
    index = int(subject.subject.rsplit("-", 1)[1])
    seed = int(demo["seed"]) * 100003 + index
    if int(demo.get("dims", 3)) == 2:
        if demo["format"] != "nifti":
            raise CohortsegError("demo.dims: 2 writes NIfTI only; set demo.format: nifti")
        image, label, affine = demo_phantom_2d(demo["shape"], demo["spacing_mm"], seed=seed)
    else:
        image, label, affine = demo_phantom(demo["shape"], demo["spacing_mm"], seed=seed)
    if demo["format"] == "dicom":
        from cohortseg.dicom.writers import along_normal, write_series

        affine, (image, label) = along_normal(affine, image, label)
        multi = subject.subject == demo_multi_frame_subject(demo)
        write_series(subject.image, image, affine, multi_frame=multi, seed=seed)
    else:
        save_nifti(subject.image, image, affine)
    if subject.label:
        save_nifti(subject.label, label, affine)
