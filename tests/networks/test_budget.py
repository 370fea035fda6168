"""Tests for cohortseg.networks.budget and the memory estimate of cohortseg.networks.topology:
the patch and batch size of nnU-Net's U-Net within a memory budget."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from cohortseg.networks.budget import (
    MIN_BATCH_SIZE,
    batch_size,
    budget_configuration,
    fit_patch,
    initial_patch_size,
    reference_elements,
)
from cohortseg.networks.topology import auto_network, feature_map_size

DATA = Path(__file__).parents[1] / "preprocessing" / "data"


def test_the_estimate_is_nnunets_static_estimate_vram_usage():
    checked = 0
    for path in sorted(DATA.glob("nnunet_plans_*.json")):
        ref = json.loads(path.read_text())
        n_classes = ref["fingerprint"]["classes"] + 1
        for plans in ref["plans"].values():
            for plan in plans.values():
                if not isinstance(plan, dict) or "estimate" not in plan:
                    continue
                got = feature_map_size(
                    plan["patch_size"], plan["strides"], plan["filters"], n_classes
                )
                assert got == plan["estimate"], path.name
                checked += 1
    assert checked >= 40


def test_the_estimate_counts_encoder_decoder_and_output_maps():
    # two stages, 8^3 patch: encoder 2 x 32 x 512 + 2 x 64 x 64; decoder (2 + 1) x 32 x 512;
    # output 3 x 512
    got = feature_map_size([8, 8, 8], [[1, 1, 1], [2, 2, 2]], [32, 64], 3)

    assert got == 2 * 32 * 512 + 2 * 64 * 64 + 3 * 32 * 512 + 3 * 512


def test_the_first_patch_has_the_grids_aspect_in_mm_clipped_to_the_median():
    assert initial_patch_size([1.0, 1.0, 1.0], [500, 500, 500]) == [256, 256, 256]
    assert initial_patch_size([0.5, 0.5, 2.0], [900, 900, 900]) == [406, 406, 102]
    assert initial_patch_size([1.0, 1.0, 1.0], [100, 300, 50.5]) == [100, 256, 50.5]
    assert initial_patch_size([1.0, 1.0], [4000, 4000]) == [2048, 2048]
    assert initial_patch_size([1.0, 1.0, 1.0], [500, 500, 500], [64, 96, 128]) == [64, 96, 128]


@pytest.mark.parametrize("budget", [0.25, 1.0, 8.0])
def test_the_fitted_patch_fits_the_budget_and_one_step_more_would_not(budget):
    spacing, median = [1.0, 1.0, 1.0], [160.0, 192.0, 160.0]

    net = fit_patch(spacing, median, 4, budget, initial_patch_size(spacing, median))

    assert net["estimate"] / 2 * 2 <= reference_elements(budget, 3)  # a batch of 2 fits
    assert net["patch_size"] == auto_network(spacing, net["patch_size"])["patch_size"]
    bigger = [p + 16 for p in net["patch_size"]]
    big = auto_network(spacing, bigger)
    estimate = feature_map_size(big["patch_size"], big["strides"], big["filters"], 4)
    assert estimate > reference_elements(budget, 3)


def test_the_axis_largest_relative_to_the_median_shrinks_first():
    # a cube patch is twice as long along x, relative to the median, as along y and z: x
    # shrinks first, until the patch has the median's aspect, then all in turn
    spacing, median = [1.0, 1.0, 1.0], [128.0, 256.0, 256.0]

    net = fit_patch(spacing, median, 2, 0.5, [128, 128, 128])

    assert net["patch_size"] == [32, 64, 64]
    assert net["estimate"] <= reference_elements(0.5, 3)


def test_batch_size_fills_the_budget_at_least_2_and_covers_at_most_5_percent():
    reference = reference_elements(8, 3)
    # half the reference: 4 patches fit; a large dataset does not cap them
    assert batch_size(int(reference / 2), [64, 64, 64], 8, 1e12, 3) == 4
    # 5 % of 10 subjects of 64^3 is half a patch: the minimum of 2 wins
    assert batch_size(int(reference / 2), [64, 64, 64], 8, 10 * 64**3, 3) == MIN_BATCH_SIZE
    # 5 % of 60 subjects of 64^3 is 3 patches
    assert batch_size(int(reference / 10), [64, 64, 64], 8, 60 * 64**3, 3) == 3


def test_a_budget_configuration_holds_patch_batch_and_network():
    net = budget_configuration([0.8, 0.8, 3.0], [400.0, 400.0, 60.0], 30 * 400 * 400 * 60, 3, 8)

    assert set(net) == {"patch_size", "batch_size", "strides", "kernel_size", "filters", "estimate"}
    divisor = [math.prod(s[a] for s in net["strides"]) for a in range(3)]
    assert all(p % d == 0 for p, d in zip(net["patch_size"], divisor, strict=True))
    assert net["kernel_size"][0] == [3, 3, 1]  # in-plane first on thick slices
    assert net["batch_size"] >= MIN_BATCH_SIZE
