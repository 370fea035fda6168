"""Tests for cohortseg.preprocessing.configurations: nnU-Net's configurations of a dataset, against
nnU-Net 2.8.1's own planner.

The reference plans in ``data/nnunet_plans_*.json`` were written by
``benchmarks/nnunet_reference_plans.py``: nnU-Net's ``ExperimentPlanner.plan_experiment`` on
each dataset's fingerprint, at memory budgets of 0.25, 8 and 24 GB, mapped back to canonical
(x, y, z) axes. cohortseg must plan the same configurations with the same spacing, median
shape, patch, batch size, strides, kernel sizes, features and memory estimate; the only
documented exception is nnU-Net's 2D plan's slice axis, which it gives no spacing (None there).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from cohortseg.core.errors import CohortsegError
from cohortseg.preprocessing.configurations import (
    chosen_configuration,
    nnunet_order,
    plan_configurations,
    target_spacing,
)
from cohortseg.preprocessing.plan import make_plan
from tests.conftest import default_config

DATA = Path(__file__).parent / "data"
REFERENCES = {p.stem.removeprefix("nnunet_plans_"): p for p in sorted(DATA.glob("*.json"))}
COMPARED = (
    "median_shape", "patch_size", "batch_size", "strides", "kernel_size", "filters", "batch_dice",
)  # fmt: skip


def reference(name: str) -> dict:
    return json.loads(REFERENCES[name].read_text())


def nnunet_configurations(plans: dict) -> dict:
    """nnU-Net's planned configurations (its cascade's second stage inherits 3d_fullres)."""
    return {k: v for k, v in plans.items() if isinstance(v, dict) and "patch_size" in v}


CASES = [
    pytest.param(name, budget, id=f"{name}-{budget}GB")
    for name in REFERENCES
    for budget in reference(name)["plans"]
]


def test_the_references_cover_the_datasets_and_budgets_of_the_brief():
    assert set(REFERENCES) >= {
        "brain_mri", "prostate_mri", "ct", "cine_mri", "knee_mri", "radiograph_2d", "demo",
        "demo_2d",
    }  # fmt: skip
    for name in REFERENCES:
        assert reference(name)["nnunetv2"] == "2.8.1"
        assert set(reference(name)["plans"]) == {"0.25", "8", "24"}


@pytest.mark.parametrize("name, budget", CASES)
def test_configurations_are_nnunets(name, budget):
    ref = reference(name)
    fp, expected = ref["fingerprint"], nnunet_configurations(ref["plans"][budget])

    planned = plan_configurations(fp["spacings_mm"], fp["shapes"], fp["classes"] + 1, float(budget))

    assert list(planned) == sorted(expected)  # 2d, 3d_fullres, 3d_lowres where nnU-Net has them
    for config, want in expected.items():
        got = planned[config]
        for key in COMPARED:
            assert got[key] == want[key], (config, key)
        assert got["estimate"] == want["estimate"], config  # static_estimate_VRAM_usage
        for axis, mm in enumerate(want["target_spacing_mm"]):
            if mm is not None:  # None: the slice axis of nnU-Net's 2D plan
                assert got["target_spacing_mm"][axis] == pytest.approx(mm, abs=1e-6), config
        assert got.get("next_stage") == want.get("next_stage")


@pytest.mark.parametrize("name", sorted(REFERENCES))
def test_the_plan_trains_nnunets_configuration_at_8_gb(name):
    ref = reference(name)
    fp = {
        **ref["fingerprint"],
        "intensity": {"mean": 0.0, "std": 1.0, "percentile_00_5": -2.0,
                      "percentile_50_0": 0.0, "percentile_99_5": 2.0},
    }  # fmt: skip
    config = default_config()
    config["classes"] = [f"class{i + 1}" for i in range(fp["classes"])]
    config["model"] = {"name": "auto"}
    config["plan"]["memory_budget_gb"] = 8
    expected = nnunet_configurations(ref["plans"]["8"])
    name_expected = "3d_fullres" if "3d_fullres" in expected else "2d"

    plan = make_plan(fp, config)

    want = expected[name_expected]
    assert plan["configuration"] == name_expected
    assert plan["patch_size"] == want["patch_size"]
    assert plan["batch_size"] == want["batch_size"]
    assert plan["network"]["strides"] == want["strides"]
    assert plan["network"]["kernel_size"] == want["kernel_size"]
    assert plan["network"]["filters"] == want["filters"]
    spacing = [s if s is not None else p for s, p in zip(want["target_spacing_mm"],
               plan["target_spacing_mm"], strict=True)]  # fmt: skip
    assert plan["target_spacing_mm"] == pytest.approx(spacing, abs=1e-6)


# --------------------------------------------------------------------------------------------
# the target spacing


def test_isotropic_and_mildly_anisotropic_grids_take_the_median():
    spacings = [[1.0, 0.9, 2.0], [1.2, 1.0, 2.2], [0.8, 1.1, 2.4]]
    shapes = [[100, 100, 50]] * 3

    assert target_spacing(spacings, shapes) == [1.0, 1.0, 2.2]


def test_thick_slices_with_few_voxels_take_the_10th_percentile():
    ref = reference("prostate_mri")["fingerprint"]  # ~0.6 x 0.6 x 3.6 mm, ~320 x 320 x 20

    spacing = target_spacing(ref["spacings_mm"], ref["shapes"])

    slices = sorted(s[2] for s in ref["spacings_mm"])
    assert spacing[2] < slices[len(slices) // 2]  # below the median slice spacing (3.6)
    assert spacing[2] == pytest.approx(3.06)  # np.percentile(..., 10): between 3.0 and 3.6


def test_thick_slices_with_many_voxels_keep_the_median_has_aniso_voxels():
    # 0.8 x 0.8 x 2.5 mm is anisotropic by spacing (2.5 > 3 x 0.8) but 200 slices are not few
    # (200 x 3 > 512): nnU-Net keeps the median; cohortseg's old rule (against min(target))
    # took the 10th percentile
    spacings = [[0.8, 0.8, z] for z in (1.0, 2.5, 2.5, 2.5, 2.5, 2.5, 2.5, 2.5, 2.5, 2.5)]
    shapes = [[512, 512, 200]] * 10

    assert target_spacing(spacings, shapes) == [0.8, 0.8, 2.5]


def test_the_10th_percentile_is_clamped_to_the_other_axes_spacing():
    ref = reference("cine_mri")["fingerprint"]  # 10 mm slices, three subjects with 1.2 mm

    spacing = target_spacing(ref["spacings_mm"], ref["shapes"])

    # the 10th percentile (1.2 mm) is finer than the in-plane spacing: clamped to it + 1e-5
    assert spacing[2] == pytest.approx(max(spacing[:2]) + 1e-5, abs=1e-9)


@pytest.mark.parametrize("coarse_axis", [0, 1, 2])
def test_the_coarse_axis_is_found_on_any_axis(coarse_axis):
    spacings = [[0.5, 0.5, 0.5] for _ in range(10)]
    shapes = [[300, 300, 300] for _ in range(10)]
    for k, mm in enumerate([3.5, 4.0, 5.0, 5.0, 5.0, 5.0, 5.0, 5.0, 5.0, 6.0]):
        spacings[k][coarse_axis] = mm
        shapes[k][coarse_axis] = 30

    spacing = target_spacing(spacings, shapes)

    expected = [0.5, 0.5, 0.5]
    expected[coarse_axis] = 3.95  # 3.5 + 0.9 x (4.0 - 3.5), by linear interpolation
    assert spacing == pytest.approx(expected)


# --------------------------------------------------------------------------------------------
# axes and the configuration trained


def test_nnunets_axes_are_sitk_order_with_the_coarsest_first():
    assert nnunet_order([1.0, 1.0, 1.0]) == [2, 1, 0]  # isotropic: SimpleITK's first, z
    assert nnunet_order([0.7, 0.36, 0.36]) == [0, 2, 1]  # sagittal knee: x first
    assert nnunet_order([0.8, 0.8, 3.0]) == [2, 1, 0]
    assert nnunet_order([0.8, 0.8, 0.5], slice_axis=2) == [2, 1, 0]  # one-slice images


def test_auto_trains_3d_fullres_or_2d_and_unplanned_configurations_are_refused():
    planned = {"2d": {}, "3d_fullres": {}}
    assert chosen_configuration("auto", planned) == "3d_fullres"
    assert chosen_configuration("auto", {"2d": {}}) == "2d"
    assert chosen_configuration("2d", planned) == "2d"
    with pytest.raises(CohortsegError, match="plan.configuration: 3d_lowres is not planned"):
        chosen_configuration("3d_lowres", planned)


def _plan_config(name: str, configuration: str, model: str = "auto") -> tuple[dict, dict]:
    ref = reference(name)
    fp = {**ref["fingerprint"], "intensity": {"mean": 0.0, "std": 1.0}}
    config = copy.deepcopy(default_config())
    config["classes"] = [f"class{i + 1}" for i in range(fp["classes"])]
    config["model"] = {**config["model"], "name": model}
    config["plan"].update(memory_budget_gb=8, configuration=configuration)
    return fp, config


def test_3d_lowres_trains_on_the_coarser_grid_nnunet_planned():
    fp, config = _plan_config("ct", "3d_lowres")

    plan = make_plan(fp, config)

    lowres = plan["configurations"]["3d_lowres"]
    assert plan["configuration"] == "3d_lowres"
    assert plan["target_spacing_mm"] == lowres["target_spacing_mm"]
    assert plan["patch_size"] == lowres["patch_size"]
    assert plan["network"]["strides"] == lowres["strides"]
    assert (
        plan["target_spacing_mm"][2] > plan["configurations"]["3d_fullres"]["target_spacing_mm"][2]
    )


def test_2d_on_volumes_trains_axial_slices_with_an_in_plane_network():
    fp, config = _plan_config("brain_mri", "2d")

    plan = make_plan(fp, config)

    assert plan["configuration"] == "2d" and plan["spatial_dims"] == 3
    assert plan["patch_size"] == [160, 192, 1]
    assert all(s[2] == 1 for s in plan["network"]["strides"])
    assert all(k[2] == 1 for k in plan["network"]["kernel_size"])
    assert max(plan["network"]["filters"]) == 512  # nnU-Net's 2D U-Net
    assert plan["batch_size"] == plan["configurations"]["2d"]["batch_size"] == 105


def test_2d_is_refused_where_nnunet_slices_along_another_axis_or_for_another_model():
    fp, config = _plan_config("knee_mri", "2d")  # sagittal slices: x is the coarsest axis
    with pytest.raises(CohortsegError, match="slices this cohort along x"):
        make_plan(fp, config)
    fp, config = _plan_config("brain_mri", "2d", model="UNet")
    with pytest.raises(CohortsegError, match="needs model.name: auto"):
        make_plan(fp, config)
