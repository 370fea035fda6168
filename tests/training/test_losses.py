"""Tests for cohortseg.training.losses: Dice + cross-entropy over deep-supervision heads."""

from __future__ import annotations

import pytest
import torch
from monai.losses import DiceCELoss

from cohortseg.training.losses import SegmentationLoss, head_weights


def test_head_weights_halve_per_head_and_sum_to_one():
    weights = head_weights(3)

    assert weights == pytest.approx([4 / 7, 2 / 7, 1 / 7])  # 1, 1/2, 1/4 normalised


def test_the_loss_over_heads_is_their_weighted_sum_and_reaches_every_head():
    gen = torch.Generator().manual_seed(0)
    label = torch.randint(0, 3, (2, 1, 8, 8, 4), generator=gen)
    heads = torch.randn(2, 3, 3, 8, 8, 4, generator=gen, requires_grad=True)
    base = DiceCELoss(to_onehot_y=True, softmax=True)

    loss = SegmentationLoss()(heads, label)
    loss.backward()

    expected = sum(w * base(heads[:, i], label) for i, w in enumerate(head_weights(3)))
    # the same float32 operations in the same order, up to the summation's rounding
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    assert all(heads.grad[:, i].abs().sum() > 0 for i in range(3))


def test_a_plain_output_gets_dice_and_cross_entropy():
    gen = torch.Generator().manual_seed(1)
    label = torch.randint(0, 2, (1, 1, 6, 6, 6), generator=gen)
    logits = torch.randn(1, 2, 6, 6, 6, generator=gen)

    loss = SegmentationLoss()(logits, label)

    assert loss.item() == DiceCELoss(to_onehot_y=True, softmax=True)(logits, label).item()
