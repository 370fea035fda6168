"""Tests for cohortseg.preprocessing.plan: target spacing, patch size, the plan and its hash, the
fingerprint."""

from __future__ import annotations

import copy

import nibabel as nib
import numpy as np
import pytest

from cohortseg.core.cohort import Subject
from cohortseg.core.errors import CohortsegError
from cohortseg.core.io import save_nifti
from cohortseg.inputs.demo import demo_phantom
from cohortseg.preprocessing.patches import extract, sample_origins
from cohortseg.preprocessing.plan import (
    fingerprint,
    make_plan,
    network_divisor,
    plan_hash,
)

# --------------------------------------------------------------------------------------------
# network_divisor


@pytest.mark.parametrize(
    "strides, divisor",
    [
        ([2, 2, 2], [8, 8, 8]),
        ([2, 2, 2, 2], [16, 16, 16]),
        ([[2, 2, 1], [2, 2, 2], 2], [8, 8, 4]),
        ([], [1, 1, 1]),
    ],
)
def test_network_divisor(strides, divisor):
    assert network_divisor(strides) == divisor


# --------------------------------------------------------------------------------------------
# make_plan

FINGERPRINT = {
    "subjects": ["a", "b", "c"],
    "spacings_mm": [[1.0, 1.0, 2.0], [1.0, 1.0, 2.0], [1.0, 1.0, 2.0]],
    "shapes": [[100, 90, 40], [110, 100, 50], [120, 110, 60]],
    "intensity": {
        "mean": 400.0,
        "std": 200.0,
        "percentile_00_5": 100.0,
        "percentile_50_0": 380.0,
        "percentile_99_5": 950.0,
    },
}


@pytest.fixture
def config():
    return {
        "classes": ["organ", "shell", "tube"],
        "model": {"name": "UNet", "strides": [2, 2, 2]},
        "plan": {
            "target_spacing_mm": None,
            "patch_size": None,
            "normalization": None,
            "memory_budget_gb": 8,
            "max_patch_size": None,
            "configuration": "auto",
            "crop": True,
            "crop_margin": 4,
        },
    }


def test_plan_derived_from_the_fingerprint(config):
    plan = make_plan(FINGERPRINT, config)

    assert plan["target_spacing_mm"] == [1.0, 1.0, 2.0]
    assert plan["median_shape"] == [110.0, 100.0, 50.0]
    # the whole median shape fits nnU-Net's 8 GB: nnU-Net's patch, rounded up to its strides
    assert plan["patch_size"] == [112, 112, 56]
    assert plan["batch_size"] == 2  # at least 2, although 5 % of 3 subjects is less
    assert (plan["configuration"], list(plan["configurations"])) == (
        "3d_fullres",
        ["2d", "3d_fullres"],
    )
    assert plan["configurations"]["3d_fullres"]["patch_size"] == plan["patch_size"]
    assert plan["normalization"] == "zscore"
    assert plan["classes"] == ["organ", "shell", "tube"]
    assert plan["intensity"] == FINGERPRINT["intensity"]
    assert (plan["crop"], plan["crop_margin"]) == (True, 4)


def test_plan_patch_size_follows_the_resampled_median_shape(config):
    config["plan"]["target_spacing_mm"] = [2.0, 2.0, 4.0]  # halves every shape

    plan = make_plan(FINGERPRINT, config)

    assert plan["target_spacing_mm"] == [2.0, 2.0, 4.0]
    assert plan["median_shape"] == [55.0, 50.0, 25.0]
    assert plan["patch_size"] == [56, 56, 32]  # the median, up to multiples of 8 (UNet)


def test_a_smaller_memory_budget_shrinks_the_patch_from_its_largest_axis(config):
    config["plan"]["memory_budget_gb"] = 0.25

    plan = make_plan(FINGERPRINT, config)

    # 112 x 112 x 56 does not fit: x and y (largest relative to the median) shrink first
    assert plan["patch_size"] == [56, 48, 24]
    assert plan["batch_size"] == 2
    # the patch covers under 25 % of the median shape: nnU-Net plans a 3d_lowres too
    lowres = plan["configurations"]["3d_lowres"]
    assert lowres["next_stage"] == "3d_cascade_fullres"
    coarser = zip(lowres["target_spacing_mm"], plan["target_spacing_mm"], strict=True)
    assert all(lo > full for lo, full in coarser)


def test_max_patch_size_caps_the_patch(config):
    config["plan"]["max_patch_size"] = [64, 64, 64]

    plan = make_plan(FINGERPRINT, config)

    assert plan["patch_size"] == [64, 64, 56]  # the cap, rounded up to the strides (50 -> 56)


@pytest.mark.parametrize(
    "key, value, planned",
    [
        ("target_spacing_mm", [1.5, 1.5, 1.5], [1.5, 1.5, 1.5]),
        ("patch_size", [32, 48, 16], [32, 48, 16]),
        ("normalization", "ct", "ct"),
    ],
)
def test_config_overrides_win(config, key, value, planned):
    config["plan"][key] = value

    assert make_plan(FINGERPRINT, config)[key] == planned


def test_plan_hash_is_stable(config):
    first = make_plan(FINGERPRINT, config)

    second = make_plan(copy.deepcopy(FINGERPRINT), copy.deepcopy(config))

    assert first["hash"] == second["hash"]
    assert first["hash"] == plan_hash(first)
    assert len(first["hash"]) == 16


@pytest.mark.parametrize(
    "section, key, value",
    [
        ("plan", "target_spacing_mm", [1.5, 1.5, 1.5]),
        ("plan", "patch_size", [32, 32, 32]),
        ("plan", "normalization", "ct"),
        ("plan", "crop", False),
        ("plan", "crop_margin", 8),
        ("plan", "memory_budget_gb", 0.25),
        ("model", "strides", [2, 2, 2, 2, 2]),
    ],
)
def test_plan_hash_changes_when_the_plan_changes(config, section, key, value):
    before = make_plan(FINGERPRINT, config)
    config[section][key] = value

    after = make_plan(FINGERPRINT, config)

    assert after != before
    assert after["hash"] != before["hash"]


def test_plan_hash_changes_with_the_classes(config):
    before = make_plan(FINGERPRINT, config)
    config["classes"] = ["organ", "shell"]

    assert make_plan(FINGERPRINT, config)["hash"] != before["hash"]


# --------------------------------------------------------------------------------------------
# fingerprint


def test_fingerprint_reports_canonical_spacings_and_shapes(tmp_path):
    # subject a: the phantom's own oblique affine; subject b: voxel axes stored as (-S, R, A)
    image_a, label_a, affine_a = demo_phantom((20, 18, 12), (1.0, 1.2, 2.5), seed=1)
    image_b, label_b, _ = demo_phantom((10, 24, 16), (1.0, 1.0, 1.0), seed=2)
    affine_b = np.array(
        [[0.0, 1.0, 0.0, -12.0], [0.0, 0.0, 2.0, -16.0], [-3.0, 0.0, 0.0, 15.0], [0, 0, 0, 1]]
    )
    subjects = []
    for sid, image, label, affine in [
        ("a", image_a, label_a, affine_a),
        ("b", image_b, label_b, affine_b),
    ]:
        image_path, label_path = tmp_path / f"{sid}.nii.gz", tmp_path / f"{sid}_seg.nii.gz"
        save_nifti(image_path, image, affine)
        save_nifti(label_path, label, affine)
        subjects.append(Subject(sid, str(image_path), str(label_path), "train"))

    fp = fingerprint(subjects)

    assert fp["subjects"] == ["a", "b"]
    canonical_a = nib.as_closest_canonical(nib.load(subjects[0].image))
    assert fp["shapes"][0] == list(canonical_a.shape)
    np.testing.assert_allclose(fp["spacings_mm"][0], canonical_a.header.get_zooms(), rtol=1e-5)
    assert fp["shapes"][1] == [24, 16, 10]
    np.testing.assert_allclose(fp["spacings_mm"][1], [1.0, 2.0, 3.0], rtol=1e-6)


def test_fingerprint_intensity_comes_from_labelled_voxels(tmp_path):
    image, label, affine = demo_phantom((20, 20, 14), (1.5, 1.5, 2.0), seed=4)
    save_nifti(tmp_path / "img.nii.gz", image, affine)
    save_nifti(tmp_path / "seg.nii.gz", label, affine)
    unlabelled = tmp_path / "other.nii.gz"
    save_nifti(unlabelled, np.full((8, 8, 8), 30000, np.int16), np.eye(4))
    subjects = [
        Subject("a", str(tmp_path / "img.nii.gz"), str(tmp_path / "seg.nii.gz"), "train"),
        Subject("b", str(unlabelled), None, "infer"),
    ]

    intensity = fingerprint(subjects)["intensity"]

    foreground = image[label > 0].astype(float)
    assert foreground.min() <= intensity["percentile_00_5"] <= intensity["percentile_50_0"]
    assert intensity["percentile_50_0"] <= intensity["percentile_99_5"] <= foreground.max()
    assert intensity["mean"] == pytest.approx(foreground.mean(), rel=0.1)
    assert intensity["std"] == pytest.approx(foreground.std(), rel=0.2)


@pytest.mark.parametrize(
    "spacing, whole",
    [([1.0, 1.0, 2.0], [120, 112, 64]), ([2.0, 2.0, 4.0], [64, 56, 32])],
)
def test_full_patch_size_holds_every_training_volume_whole(config, spacing, whole):
    config["plan"].update(patch_size="full", target_spacing_mm=spacing)
    plan = make_plan(FINGERPRINT, config)
    assert plan["patch_size"] == whole  # largest resampled shape, up to a multiple of 8
    largest = [120, 110, 60]
    factor = [1.0 / (s / 1.0) for s in spacing[:2]] + [2.0 / spacing[2]]
    resampled = [round(n * f) for n, f in zip(largest, factor, strict=True)]
    label = np.zeros(resampled, np.uint8)
    label[0, 0, 0] = label[-1, -1, -1] = 1  # opposite corners
    origins = sample_origins(label, plan["patch_size"], 4, 0.5, np.random.default_rng(0))
    for origin in origins:  # every patch is the whole volume, centred and padded
        patch = extract(label, origin, plan["patch_size"], 0)
        assert patch.shape == tuple(whole) and int(patch.sum()) == 2


# --------------------------------------------------------------------------------------------
# model.name: auto


def test_auto_plans_the_network_and_a_patch_divisible_by_its_strides(config):
    config["model"] = {"name": "auto"}

    plan = make_plan(FINGERPRINT, config)

    network = plan["network"]
    # 1 x 1 x 2 mm: z (twice as coarse) is pooled from the second pooling on, with
    # kernel 1 in z until then (nnU-Net's rule)
    assert network["strides"][:3] == [[1, 1, 1], [2, 2, 1], [2, 2, 2]]
    assert network["kernel_size"][0] == [3, 3, 1]
    assert network["filters"][0] == 32 and max(network["filters"]) <= 320
    divisor = network_divisor(network["strides"])
    assert all(p % d == 0 for p, d in zip(plan["patch_size"], divisor, strict=True))
    # the median shape (110, 100, 50) fits 8 GB whole; rounded up to the strides as nnU-Net does
    assert plan["patch_size"] == [112, 112, 56]
    assert network["strides"] == plan["configurations"]["3d_fullres"]["strides"]


def test_plans_of_other_networks_carry_no_network(config):
    assert "network" not in make_plan(FINGERPRINT, config)


# --------------------------------------------------------------------------------------------
# 2D plans: every image one slice


FINGERPRINT_2D = {
    **FINGERPRINT,
    "spacings_mm": [[0.8, 0.8, 3.0], [0.9, 0.9, 1.0], [1.0, 1.0, 5.0]],
    "shapes": [[100, 90, 1], [110, 100, 1], [120, 110, 1]],
}


def test_a_plan_of_one_slice_images_is_2d_with_one_slice_patches(config):
    plan = make_plan(FINGERPRINT_2D, config)

    assert plan["spatial_dims"] == 2
    # nnU-Net's 2d patch (the in-plane median 110 x 100, rounded up to multiples of 8); not 8
    # along the slice: UNet strides are (2, 2, 1)
    assert plan["patch_size"] == [112, 112, 1]
    assert (plan["configuration"], list(plan["configurations"])) == ("2d", ["2d"])
    assert plan["median_shape"][2] == 1  # no resampling along the slice axis
    volume = make_plan(FINGERPRINT, config)
    assert volume["spatial_dims"] == 3
    # recorded, but a volume plan keeps the hash it had before spatial_dims was
    assert volume["hash"] == plan_hash({k: v for k, v in volume.items() if k != "spatial_dims"})


def test_a_2d_auto_plan_pools_in_plane_only(config):
    config["model"] = {"name": "auto"}
    config["plan"]["patch_size"] = [48, 48, 16]  # the user's third axis cannot apply to a slice

    plan = make_plan(FINGERPRINT_2D, config)

    assert plan["patch_size"] == [48, 48, 1]
    assert all(s[2] == 1 for s in plan["network"]["strides"])
    assert all(k[2] == 1 for k in plan["network"]["kernel_size"])


def test_a_cohort_is_2d_or_3d_not_both():
    from cohortseg.preprocessing.plan import spatial_dims

    assert spatial_dims([[64, 64, 1], [64, 64, 1]]) == 2
    assert spatial_dims([[64, 64, 9], [64, 64, 2]]) == 3
    with pytest.raises(CohortsegError, match="one-slice images among volumes.*: b$|: b;"):
        spatial_dims([[64, 64, 9], [64, 64, 1]], ["a", "b"])
    with pytest.raises(CohortsegError, match="not nearest the axial plane: a"):
        spatial_dims([[1, 64, 64]], ["a"])  # a sagittal slice
