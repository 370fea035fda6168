"""Tests for cohortseg.inputs.demo: the synthetic demo subjects."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest

from cohortseg.core.cohort import demo_multi_frame_subject, demo_subjects
from cohortseg.core.geometry import corner_distance_mm, spacing_of
from cohortseg.core.io import load_nifti
from cohortseg.dicom.series import find_series, read_series, select_series
from cohortseg.dicom.writers import DEMO_PHI
from cohortseg.inputs.demo import demo_phantom, write_demo_subject

SHAPE = (32, 30, 20)
SPACING = (1.2, 1.2, 3.0)


def test_phantom_is_deterministic_for_a_seed():
    image_a, label_a, affine_a = demo_phantom(SHAPE, SPACING, seed=7)
    image_b, label_b, affine_b = demo_phantom(SHAPE, SPACING, seed=7)

    np.testing.assert_array_equal(image_a, image_b)
    np.testing.assert_array_equal(label_a, label_b)
    np.testing.assert_array_equal(affine_a, affine_b)


def test_phantom_types_shape_and_classes():
    image, label, affine = demo_phantom(SHAPE, SPACING, seed=0)

    assert image.dtype == np.int16 and label.dtype == np.uint8
    assert image.shape == label.shape == SHAPE
    assert affine.shape == (4, 4)
    assert set(np.unique(label)) == {0, 1, 2, 3}


@pytest.mark.parametrize("seed", range(5))
def test_phantom_affine_is_oblique_with_spacing_near_the_requested(seed):
    _, _, affine = demo_phantom(SHAPE, SPACING, seed=seed)

    spacing = spacing_of(affine)
    np.testing.assert_array_less(np.abs(spacing / SPACING - 1), 0.1 + 1e-9)
    directions = affine[:3, :3] / spacing
    off_diagonal = directions - np.diag(np.diag(directions))
    assert np.abs(off_diagonal).max() > 1e-3
    np.testing.assert_array_equal(affine[3], [0, 0, 0, 1])


def test_different_subjects_get_different_affines():
    affines = [demo_phantom(SHAPE, SPACING, seed=s)[2] for s in range(4)]

    for i in range(4):
        for j in range(i + 1, 4):
            assert not np.allclose(affines[i][:3, :3], affines[j][:3, :3])


def test_written_demo_subjects_differ_in_geometry(tmp_path):
    demo = {"shape": [16, 16, 12], "spacing_mm": [2.0, 2.0, 3.0], "seed": 0, "format": "nifti"}
    subjects = demo_subjects({"subjects_per_split": {"train": 2}, "format": "nifti"}, str(tmp_path))

    for s in subjects:
        write_demo_subject(s, demo)

    (img1, aff1), (img2, aff2) = (load_nifti(s.image, s.subject) for s in subjects)
    label1, label_aff1 = load_nifti(subjects[0].label, subjects[0].subject, dtype=np.uint8)
    assert img1.shape == img2.shape == label1.shape == (16, 16, 12)
    np.testing.assert_allclose(label_aff1, aff1)
    assert not np.allclose(aff1, aff2)


@pytest.mark.parametrize("seed", range(3))
def test_phantom_structures_have_distinct_contrast(seed):
    image, label, _ = demo_phantom(SHAPE, SPACING, seed=seed)

    means = [float(image[label == c].mean()) for c in (1, 2, 3)]

    gaps = [abs(means[i] - means[j]) for i in range(3) for j in range(i + 1, 3)]
    assert min(gaps) > 100, means


def test_phantom_works_for_a_non_cubic_shape():
    shape = (40, 24, 14)

    image, label, affine = demo_phantom(shape, (1.0, 1.5, 2.5), seed=3)

    assert image.shape == label.shape == shape
    assert set(np.unique(label)) == {0, 1, 2, 3}
    np.testing.assert_array_less(np.abs(spacing_of(affine) / (1.0, 1.5, 2.5) - 1), 0.1 + 1e-9)


def test_dicom_demo_converts_back_to_the_phantom_on_the_labels_grid(tmp_path):
    """demo.format: dicom: oblique series, one of them one multi-frame object, with synthetic
    patient data; each converts to the phantom's voxels on its NIfTI label's grid."""
    demo = {
        "subjects_per_split": {"train": 1, "val": 1, "test": 1},
        "shape": [16, 14, 10],
        "spacing_mm": [2.0, 2.0, 3.0],
        "seed": 0,
        "format": "dicom",
    }
    subjects = demo_subjects(demo, root=str(tmp_path))
    assert demo_multi_frame_subject(demo) == subjects[2].subject
    for s in subjects:
        write_demo_subject(s, demo)
        series, _ = find_series(s.image)
        converted = read_series(select_series(series, None), 0.1)
        label, affine = load_nifti(s.label, s.subject, dtype=np.uint8)
        assert converted.multi_frame == (s.subject == demo_multi_frame_subject(demo))
        assert converted.data.shape == label.shape
        assert corner_distance_mm(converted.affine, affine, label.shape) < 0.01
        assert pydicom.dcmread(series[0].files[0]).PatientID == DEMO_PHI["PatientID"]


def test_2d_phantom_is_one_in_plane_oblique_slice_with_every_class(tmp_path):
    from cohortseg.inputs.demo import demo_phantom_2d

    image, label, affine = demo_phantom_2d((48, 40, 16), SPACING, seed=3)

    assert image.shape == label.shape == (48, 40, 1)
    assert set(np.unique(label)) == {0, 1, 2, 3}
    assert np.allclose(affine[2, :2], 0) and np.allclose(affine[:2, 2], 0)  # slice normal: S
    assert 0.9 * SPACING[2] <= spacing_of(affine)[2] <= 1.1 * SPACING[2]
    demo = {"seed": 0, "shape": [48, 40, 16], "spacing_mm": list(SPACING), "format": "nifti"}
    subject = demo_subjects({**demo, "subjects_per_split": {"train": 1, "val": 1}}, str(tmp_path))[
        0
    ]
    write_demo_subject(subject, {**demo, "dims": 2})
    assert load_nifti(subject.image)[0].shape == (48, 40, 1)
    assert load_nifti(subject.label)[0].shape == (48, 40, 1)
