"""Tests for cohortseg.training.losses: Dice + cross-entropy over deep-supervision heads."""

from __future__ import annotations

import pytest
import torch
from monai.losses import DiceCELoss

from cohortseg.training.losses import SegmentationLoss, head_weights, plan_batch_dice


def test_head_weights_halve_per_head_and_sum_to_one():
    weights = head_weights(3)

    assert weights == pytest.approx([4 / 7, 2 / 7, 1 / 7])  # 1, 1/2, 1/4 normalised


def test_the_loss_over_heads_is_their_weighted_sum_and_reaches_every_head():
    gen = torch.Generator().manual_seed(0)
    label = torch.randint(0, 3, (2, 1, 8, 8, 4), generator=gen)
    heads = torch.randn(2, 3, 3, 8, 8, 4, generator=gen, requires_grad=True)
    base = DiceCELoss(to_onehot_y=True, softmax=True, include_background=False)

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

    assert (
        loss.item()
        == DiceCELoss(to_onehot_y=True, softmax=True, include_background=False)(
            logits, label
        ).item()
    )


def test_the_dice_term_leaves_the_background_out_as_nnunet():
    torch.manual_seed(0)
    logits = torch.randn(2, 4, 8, 8, 8)
    label = torch.randint(0, 4, (2, 1, 8, 8, 8))

    loss = SegmentationLoss()(logits, label)

    p = torch.softmax(logits, 1)  # over every class, background included
    y = torch.nn.functional.one_hot(label[:, 0], 4).permute(0, 4, 1, 2, 3).float()
    dims = (2, 3, 4)
    dice = (2 * (p * y).sum(dims) + 1e-5) / (p.sum(dims) + y.sum(dims) + 1e-5)  # (B, C)
    cross_entropy = torch.nn.functional.cross_entropy(logits, label[:, 0])
    # float32 sums of 512 terms: relative error ~ 512 * 6e-8, far below 1e-5
    assert float(loss) == pytest.approx(float(1 - dice[:, 1:].mean() + cross_entropy), rel=1e-5)
    with_background = 1 - dice.mean() + cross_entropy
    assert float(loss) != pytest.approx(float(with_background), rel=1e-6)


def test_batch_dice_pools_the_batch_before_the_ratio():
    torch.manual_seed(1)
    logits = torch.randn(2, 3, 6, 6, 6)
    label = torch.randint(0, 3, (2, 1, 6, 6, 6))

    loss = SegmentationLoss(batch_dice=True)(logits, label)

    p = torch.softmax(logits, 1)
    y = torch.nn.functional.one_hot(label[:, 0], 3).permute(0, 4, 1, 2, 3).float()
    dims = (0, 2, 3, 4)
    dice = (2 * (p * y).sum(dims) + 1e-5) / (p.sum(dims) + y.sum(dims) + 1e-5)  # (C,)
    cross_entropy = torch.nn.functional.cross_entropy(logits, label[:, 0])
    assert float(loss) == pytest.approx(float(1 - dice[1:].mean() + cross_entropy), rel=1e-5)


def test_the_plan_says_whether_the_dice_pools_the_batch():
    assert plan_batch_dice({}) is False
    plan = {"configuration": "2d", "configurations": {"2d": {"batch_dice": True}}}
    assert plan_batch_dice(plan) is True
