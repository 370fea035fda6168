"""The way in: preprocessing onto the plan's grid (resampling, crop, normalisation), and the
check that a label still lies on its image's grid where it is read."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from skimage.filters import threshold_otsu

from cohortseg.core.cohort import Subject
from cohortseg.core.errors import InvalidInputError
from cohortseg.core.geometry import spacing_of
from cohortseg.core.io import save_nifti
from cohortseg.inputs.demo import demo_phantom
from cohortseg.inputs.validate import validate_subject
from cohortseg.preprocessing.prepare import (
    body_crop,
    normalise,
    otsu_threshold,
    prepare_image,
    prepare_label,
    prepare_subject,
    resize,
)
from cohortseg.workflow.config import cohort_config
from tests.conftest import REPO, default_config

PLAN = {
    "target_spacing_mm": [2.0, 2.0, 2.0],
    "normalization": "zscore",
    "crop": True,
    "crop_margin": 2,
}


def world(affine: np.ndarray, index: np.ndarray) -> np.ndarray:
    return np.asarray(affine)[:3, :3] @ index + np.asarray(affine)[:3, 3]


def centroid_world(labels: np.ndarray, affine: np.ndarray, c: int) -> np.ndarray:
    return world(affine, np.argwhere(labels == c).mean(axis=0))


def test_resampled_label_stays_in_place_in_world_coordinates() -> None:
    image, label, affine = demo_phantom([40, 36, 24], [1.5, 1.5, 3.0], seed=3)
    plan = {
        "target_spacing_mm": [1.0, 1.0, 1.0],
        "normalization": "zscore",
        "crop": True,
        "crop_margin": 3,
    }
    tensor, geometry = prepare_image(image, affine, plan)
    grid_label = prepare_label(label, geometry)[0].numpy()
    assert tensor.shape[1:] == grid_label.shape
    np.testing.assert_allclose(spacing_of(np.array(geometry.affine)), 1.0, atol=0.05)
    for c in (1, 2, 3):
        shift = centroid_world(grid_label, geometry.affine, c) - centroid_world(label, affine, c)
        assert np.linalg.norm(shift) < 1.0, f"class {c} moved by {shift} mm"


def test_body_crop_contains_the_body_with_margin() -> None:
    vol = np.zeros((30, 30, 30), np.float32)
    vol[10:20, 5:25, 12:14] = 100.0
    box = body_crop(vol, margin=2)
    assert box == ((8, 22), (3, 27), (10, 16))


@pytest.mark.parametrize("seed", range(4))
def test_otsu_threshold_is_skimages(seed: int) -> None:
    rng = np.random.default_rng(seed)
    values = np.concatenate([rng.normal(100, 20, 3000), rng.normal(400 + 50 * seed, 60, 5000)])
    values = values.astype(np.float32).reshape(20, 20, 20)
    expected = threshold_otsu(values)
    assert otsu_threshold(torch.from_numpy(values)) == pytest.approx(expected, rel=1e-6)


def test_body_crop_of_a_tensor_is_that_of_the_array() -> None:
    image, _, _ = demo_phantom([30, 26, 22], [2.0, 2.0, 2.0], seed=4)
    image = image.astype(np.float32)
    assert body_crop(torch.from_numpy(image), 3) == body_crop(image, 3)


def test_zscore_normalisation() -> None:
    x = torch.randn(1, 10, 10, 10) * 50 + 300
    y = normalise(x, {"normalization": "zscore"})
    assert abs(float(y.mean())) < 1e-4 and abs(float(y.std()) - 1) < 1e-3


def test_ct_normalisation_clips_to_foreground_percentiles() -> None:
    plan = {
        "normalization": "ct",
        "intensity": {
            "percentile_00_5": -100.0,
            "percentile_99_5": 200.0,
            "mean": 50.0,
            "std": 100.0,
        },
    }
    y = normalise(torch.tensor([-1000.0, 50.0, 3000.0]), plan)
    np.testing.assert_allclose(y.numpy(), [-1.5, 0.0, 1.5])


def test_nearest_resize_keeps_label_values() -> None:
    lab = torch.randint(0, 4, (1, 9, 9, 9), dtype=torch.uint8)
    out = resize(lab, (13, 5, 9), "nearest")
    assert out.dtype == torch.uint8 and set(out.unique().tolist()) <= {0, 1, 2, 3}


# --------------------------------------------------------------------------------------------
# The label on its image's grid


def validated_subject(tmp_path) -> Subject:
    """A phantom subject on disk that passes validation."""
    image, label, affine = demo_phantom([24, 22, 16], [2.0, 2.0, 3.0], seed=7)
    subject = Subject(
        "sub-07", str(tmp_path / "image.nii.gz"), str(tmp_path / "label.nii.gz"), "train"
    )
    save_nifti(subject.image, image, affine)
    save_nifti(subject.label, label, affine)
    assert validate_subject(subject, 4, 64, 1.0) == []
    return subject


def test_prepare_subject_takes_image_and_label_to_one_grid(tmp_path) -> None:
    s = validated_subject(tmp_path)
    image, label, geometry = prepare_subject(s.subject, s.image, s.label, PLAN)
    assert image.shape == label.shape and label.dtype == torch.uint8
    assert set(label.unique().tolist()) == {0, 1, 2, 3}
    np.testing.assert_allclose(spacing_of(np.array(geometry.affine)), 2.0, atol=0.1)


def test_a_label_shifted_after_validation_fails_preprocessing(tmp_path) -> None:
    s = validated_subject(tmp_path)
    label, affine = demo_phantom([24, 22, 16], [2.0, 2.0, 3.0], seed=7)[1:]
    shifted = affine.copy()
    shifted[:3, 3] += [0.0, 3.0, 0.0]
    save_nifti(s.label, label, shifted)  # replaced after validation
    with pytest.raises(InvalidInputError, match="affine differs from image by 3.0 mm") as err:
        prepare_subject(s.subject, s.image, s.label, PLAN, affine_tolerance_mm=1.0)
    assert (err.value.subject, err.value.path) == ("sub-07", s.label)
    # a tolerance that allows the shift lets it through
    prepare_subject(s.subject, s.image, s.label, PLAN, affine_tolerance_mm=3.5)


def test_a_label_of_another_shape_fails_preprocessing(tmp_path) -> None:
    s = validated_subject(tmp_path)
    label, affine = demo_phantom([24, 22, 17], [2.0, 2.0, 3.0], seed=7)[1:]
    save_nifti(s.label, label, affine)
    with pytest.raises(
        InvalidInputError, match=r"shape \(24, 22, 17\) differs from image shape \(24, 22, 16\)"
    ) as err:
        prepare_subject(s.subject, s.image, s.label, PLAN)
    assert (err.value.subject, err.value.path) == ("sub-07", s.label)


def test_prepare_label_checks_the_label_against_the_images_grid() -> None:
    image, label, affine = demo_phantom([24, 22, 16], [2.0, 2.0, 3.0], seed=2)
    _, geometry = prepare_image(image, affine, PLAN)
    with pytest.raises(InvalidInputError, match="sub-02: lab.nii: label shape"):
        prepare_label(label[:, :, :-1], geometry, subject="sub-02", label_path="lab.nii")
    moved = affine.copy()
    moved[:3, 3] += 2.0
    with pytest.raises(InvalidInputError, match="affine differs from image by 3.5 mm"):
        prepare_label(label, geometry, label_affine=moved, subject="sub-02", label_path="l.nii")
    on_grid = prepare_label(label, geometry, label_affine=affine)
    assert on_grid.shape[1:] == tuple(b - a for a, b in geometry.crop)


def test_a_preprocess_shard_fails_a_shifted_label_by_name_and_does_the_others(tmp_path) -> None:
    s = validated_subject(tmp_path)
    image, label, affine = demo_phantom([24, 22, 16], [2.0, 2.0, 3.0], seed=7)
    save_nifti(tmp_path / "good_image.nii.gz", image, affine)
    save_nifti(tmp_path / "good_label.nii.gz", label, affine)
    shifted = affine.copy()
    shifted[:3, 3] += [3.0, 0.0, 0.0]
    save_nifti(s.label, label, shifted)  # replaced after validation
    sheet = tmp_path / "samples.tsv"
    sheet.write_text(
        "subject\timage\tlabel\tsplit\n"
        f"{s.subject}\t{s.image}\t{s.label}\ttrain\n"
        f"sub-good\t{tmp_path / 'good_image.nii.gz'}\t{tmp_path / 'good_label.nii.gz'}\tval\n"
    )
    config = default_config()
    config["samples"] = str(sheet)
    (tmp_path / "plan.json").write_text(json.dumps(PLAN))
    result = subprocess.run(
        [
            sys.executable,
            str(REPO / "scripts" / "preprocess.py"),
            *("--cohort", json.dumps(cohort_config(config)), "--shard", "00000"),
            *("--plan", str(tmp_path / "plan.json"), "--affine-tolerance-mm", "1.0"),
            *("--manifest", "results/preprocessed/00000.tsv"),
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert result.returncode == 1
    assert "cohortseg error: 1 subject(s) of this shard failed" in result.stderr
    assert f"sub-07: {s.label}: label affine differs from image by 3.0 mm" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "results" / "preprocessed" / "00000.tsv").exists()
    assert not (tmp_path / "results" / "preprocessed" / "sub-07").exists()
    for name in ("image.nii", "label.nii.gz", "geometry.json"):  # the other subject is done
        assert (tmp_path / "results" / "preprocessed" / "sub-good" / name).exists()
