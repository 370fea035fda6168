"""Uncertainty: entropy, per-structure scores, TTA member disagreement, calibration, ranks."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from cohortseg.inference.uncertainty import (
    expected_calibration_error,
    member_disagreement,
    predictive_entropy,
    reliability_bins,
    spearman,
    structure_band,
    structure_uncertainty,
)


def test_entropy_is_0_for_a_certain_class_and_1_for_equal_probabilities():
    probs = torch.zeros(4, 2, 1, 1)
    probs[2, 0] = 1.0
    probs[:, 1] = 0.25
    entropy = predictive_entropy(probs)
    assert entropy.shape == (2, 1, 1)
    assert float(entropy[0, 0, 0]) == pytest.approx(0.0, abs=1e-6)
    assert float(entropy[1, 0, 0]) == pytest.approx(1.0, abs=1e-6)


def test_the_band_of_one_voxel_is_its_3x3x3_neighbourhood():
    labels = torch.zeros(5, 5, 5, dtype=torch.uint8)
    labels[2, 2, 2] = 1
    assert int(structure_band(labels, 1).sum()) == 27
    assert int(structure_band(labels, 1, band_voxels=0).sum()) == 1
    assert int(structure_band(labels, 2).sum()) == 0


def test_structure_uncertainty_averages_the_entropy_over_structure_and_band():
    labels = torch.zeros(7, 7, 7, dtype=torch.uint8)
    labels[3, 3, 3] = 1
    entropy = torch.zeros(7, 7, 7)
    entropy[3, 3, 3] = 0.54  # the structure itself
    entropy[2, 3, 3] = 0.27  # in its band
    entropy[0, 0, 0] = 1.0  # far away: not counted
    organ, shell = structure_uncertainty(entropy, labels, n_classes=3)
    assert organ == pytest.approx((0.54 + 0.27) / 27)
    assert math.isnan(shell)  # not predicted


def test_member_disagreement_is_0_when_members_agree_and_1_minus_dice_otherwise():
    labels = torch.zeros(4, 4, 4, dtype=torch.uint8)
    labels[:2] = 1
    same = [labels.clone(), labels.clone()]
    assert member_disagreement(same, labels, 2) == [0.0]
    half = labels.clone()
    half[1] = 0  # a member that finds half the structure: Dice 2/3
    assert member_disagreement([labels, half], labels, 2)[0] == pytest.approx((1 - 2 / 3) / 2)
    assert math.isnan(member_disagreement([labels], labels, 3)[1])


def test_expected_calibration_error_of_calibrated_and_overconfident_voxels():
    # 10 voxels of two classes, each 0.8 confident in class 0
    probs = torch.tensor([0.8, 0.2]).view(2, 1, 1, 1).expand(2, 10, 1, 1).contiguous()
    right = torch.zeros(10, 1, 1, dtype=torch.uint8)
    right[8:] = 1  # 8 of 10 are class 0: accuracy 0.8 = confidence
    bins = reliability_bins(probs, right)
    assert bins.shape == (10, 3)
    assert bins[8].tolist() == pytest.approx([10, 8.0, 8], rel=1e-6)
    assert expected_calibration_error(bins) == pytest.approx(0.0, abs=1e-6)  # float32 0.8
    wrong = torch.zeros(10, 1, 1, dtype=torch.uint8)
    wrong[5:] = 1  # half right at 0.8 confidence: overconfident by 0.3
    assert expected_calibration_error(reliability_bins(probs, wrong)) == pytest.approx(0.3)
    # bins of two subjects add up
    both = reliability_bins(probs, right) + reliability_bins(probs, wrong)
    assert expected_calibration_error(both) == pytest.approx(0.15)
    assert math.isnan(expected_calibration_error(np.zeros((10, 3))))


def test_spearman_ranks():
    assert spearman([1, 2, 3, 4], [10, 20, 25, 100]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert math.isnan(spearman([1, 1, 1], [1, 2, 3]))
