"""Validation of subjects: one clear problem per defect, never a crash."""

from __future__ import annotations

import gzip

import nibabel as nib
import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from cohortseg.core.cohort import Subject
from cohortseg.core.errors import CohortsegError
from cohortseg.inputs.validate import Problem, gate, read_problems, validate_subject, write_problems

AFFINE = np.diag([1.0, 1.0, 2.0, 1.0])


def save(path, data, affine=AFFINE):
    nib.save(nib.Nifti1Image(data, affine), str(path))
    return str(path)


@pytest.fixture
def good(tmp_path):
    image = np.random.default_rng(0).normal(100, 10, (10, 12, 8)).astype(np.float32)
    label = np.zeros((10, 12, 8), np.uint8)
    label[2:5, 3:6, 2:4] = 1
    label[6:8, 6:9, 4:6] = 2
    return Subject(
        "sub-01",
        save(tmp_path / "img.nii.gz", image),
        save(tmp_path / "lab.nii.gz", label),
        "train",
    )


def problems_of(subject, n_classes=3, max_dim=512, tol=1.0):
    return [p.problem for p in validate_subject(subject, n_classes, max_dim, tol)]


def test_a_good_subject_has_no_problems(good):
    assert problems_of(good) == []


def test_missing_files(tmp_path, good):
    s = Subject("sub-02", str(tmp_path / "nope.nii.gz"), str(tmp_path / "nolab.nii.gz"), "train")
    found = validate_subject(s, 3, 512, 1.0)
    assert [(p.kind, p.problem) for p in found] == [
        ("image", "file does not exist"),
        ("label", "file does not exist"),
    ]
    assert str(found[0]) == f"sub-02: image {tmp_path / 'nope.nii.gz'}: file does not exist"


def test_not_nifti_truncated_and_corrupt_gzip(tmp_path, good):
    (tmp_path / "text.nii.gz").write_bytes(b"hello, not an image")
    data = open(good.image, "rb").read()
    (tmp_path / "trunc.nii.gz").write_bytes(data[: len(data) // 2])
    raw = bytearray(gzip.decompress(data))
    corrupt = bytearray(gzip.compress(bytes(raw)))
    corrupt[len(corrupt) // 2] ^= 0xFF
    (tmp_path / "corrupt.nii.gz").write_bytes(bytes(corrupt))
    for name in ("text", "trunc", "corrupt"):
        s = Subject(name, str(tmp_path / f"{name}.nii.gz"), None, "infer")
        found = problems_of(s)
        assert len(found) == 1, (name, found)
        assert "NIfTI" in found[0] or "truncated or corrupt" in found[0], (name, found)


def test_dimensions(tmp_path):
    four_d = Subject("a", save(tmp_path / "a.nii", np.zeros((4, 4, 4, 2), np.int16)), None, "infer")
    assert "expected a 3D volume, got 4D" in problems_of(four_d)[0]
    squeezed = Subject(
        "b", save(tmp_path / "b.nii", np.ones((4, 4, 4, 1), np.int16)), None, "infer"
    )
    assert problems_of(squeezed) == []
    zero = Subject("c", save(tmp_path / "c.nii", np.zeros((4, 0, 4), np.int16)), None, "infer")
    assert any("zero-length" in p for p in problems_of(zero))
    big = Subject("d", save(tmp_path / "d.nii", np.zeros((4, 4, 40), np.int16)), None, "infer")
    assert "exceeds validation.max_dim = 32" in problems_of(big, max_dim=32)[0]


def test_nan_and_singular_affine(tmp_path):
    data = np.ones((4, 4, 4), np.float32)
    data[1, 1, 1] = np.nan
    data[2, 2, 2] = np.inf
    nan = Subject("a", save(tmp_path / "a.nii", data), None, "infer")
    assert problems_of(nan) == ["2 NaN or infinite voxel(s)"]
    img = nib.Nifti1Image(np.ones((4, 4, 4), np.int16), None)
    img.set_sform(np.diag([1.0, 1.0, 0.0, 1.0]), code=1)
    img.set_qform(None, code=0)
    nib.save(img, str(tmp_path / "b.nii"))
    sing = Subject("b", str(tmp_path / "b.nii"), None, "infer")
    assert problems_of(sing) == ["affine is singular (zero voxel volume)"]


def test_label_problems(tmp_path, good):
    shape = (10, 12, 8)
    frac = np.zeros(shape, np.float32)
    frac[0, 0, 0] = 0.5
    outside = np.zeros(shape, np.uint8)
    outside[0, 0, 0] = 7
    cases = {
        "frac": (frac, AFFINE, "non-integer label values"),
        "outside": (outside, AFFINE, "label values [7] outside the configured classes 0..2"),
        "shape": (np.zeros((10, 12, 9), np.uint8), AFFINE, "shape (10, 12, 9) differs"),
    }
    shifted = AFFINE.copy()
    shifted[0, 3] = 2.1
    cases["moved"] = (np.zeros(shape, np.uint8), shifted, "affine differs from image by 2.1 mm")
    for name, (data, affine, expected) in cases.items():
        s = Subject("sub-01", good.image, save(tmp_path / f"{name}.nii.gz", data, affine), "train")
        found = problems_of(s)
        assert len(found) == 1 and expected in found[0], (name, found)


def test_gate(tmp_path):
    problems = [
        Problem("sub-1", "image", "a.nii", "file does not exist"),
        Problem("sub-2", "label", "b.nii", "non-integer label values"),
    ]
    assert gate([], "fail") == "all subjects are valid"
    with pytest.raises(
        CohortsegError, match=r"(?s)2 invalid subject\(s\).*sub-1: image a.nii: file does not exist"
    ):
        gate(problems, "fail")
    # skip: the run goes on (each later job leaves them out), naming them
    message = gate(problems, "skip")
    assert message.startswith("2 invalid subject(s) left out") and "sub-2: label b.nii" in message
    write_problems(tmp_path / "t.tsv", problems)
    assert read_problems(tmp_path / "t.tsv") == problems


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    shape=st.tuples(*[st.integers(1, 9)] * 3),
    spacing=st.tuples(*[st.floats(0.1, 5.0)] * 3),
    shift=st.floats(-5, 5),
    rotate=st.booleans(),
    n_labels=st.integers(0, 5),
    seed=st.integers(0, 2**16),
)
def test_random_volumes_never_crash_the_validator(
    tmp_path, shape, spacing, shift, rotate, n_labels, seed
):
    rng = np.random.default_rng(seed)
    affine = np.diag([*spacing, 1.0])
    if rotate:
        affine[:3, :3] = affine[:3, :3][:, [1, 0, 2]]
    label_affine = affine.copy()
    label_affine[:3, 3] += shift
    image = rng.normal(size=shape).astype(np.float32)
    label = rng.integers(0, n_labels + 1, shape).astype(np.uint8)
    s = Subject(
        "x",
        save(tmp_path / "i.nii", image, affine),
        save(tmp_path / "l.nii", label, label_affine),
        "train",
    )
    found = validate_subject(s, 4, 64, 1.0)
    assert all(isinstance(p, Problem) and p.subject == "x" for p in found)
    moved = abs(shift) * np.sqrt(3) > 1.0  # every corner moves by |shift| along x, y and z
    assume(abs(abs(shift) * np.sqrt(3) - 1.0) > 1e-6)
    assert any("affine differs" in p.problem for p in found) == moved
    assert any("outside the configured classes" in p.problem for p in found) == (label.max() > 3)


def test_intensities_beyond_float32_are_named(tmp_path):
    data = np.ones((4, 4, 4), np.float64)
    data[0, 0, 0] = 1e300
    huge = Subject("a", save(tmp_path / "a.nii", data), None, "infer")
    assert problems_of(huge) == [
        "intensities up to 1e+300 exceed float32's range (3.4e+38), in which cohortseg "
        "computes; rescale the image (or its scl_slope)"
    ]
    img = nib.Nifti1Image(np.full((4, 4, 4), 1000, np.int16), AFFINE)
    img.header.set_slope_inter(1e36, 0.0)  # a scaled file whose intensities overflow float32
    nib.save(img, str(tmp_path / "b.nii"))
    scaled = Subject("b", str(tmp_path / "b.nii"), None, "infer")
    assert "exceed float32's range" in problems_of(scaled)[0]


def test_a_field_of_view_beyond_any_scanner_is_named(tmp_path):
    # what the header fuzzer found: a sform of 3.4e38 mm voxels, from which no grid can be made
    affine = np.diag([1.5, 3.4e38, 3.0, 1.0])
    wild = Subject("a", save(tmp_path / "a.nii", np.ones((4, 4, 4), np.int16), affine), None, "x")
    assert problems_of(wild) == [
        "the affine spans 1.36e+39 mm along voxel axis 2 (voxel sizes 1.5, 3.4e+38, 3 mm): "
        "more than 10000 mm, beyond any scanner; the header's sform or qform is broken"
    ]
    wide = Subject(
        "b",
        save(tmp_path / "b.nii", np.ones((4, 4, 4), np.int16), np.diag([400.0] * 3 + [1])),
        None,
        "x",
    )
    assert problems_of(wide) == []  # 1.6 m: a whole body fits
