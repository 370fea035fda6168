"""The training loss: Dice + cross-entropy, over the deep-supervision heads of a network that
has them (``model.name: auto``), weighted as nnU-Net weights them."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from monai.losses import DiceCELoss


def head_weights(n_heads: int) -> list[float]:
    """Weights of a network's outputs, full resolution first: 1, 1/2, 1/4 … normalised to sum
    to 1 (nnU-Net's deep-supervision weights)."""
    raw = [0.5**i for i in range(n_heads)]
    return [w / sum(raw) for w in raw]


def plan_batch_dice(plan: Mapping) -> bool:
    """Whether the plan's configuration pools the Dice over the batch (nnU-Net's
    ``batch_dice``, recorded per configuration in ``plan.json``); plans made before the
    configurations were recorded: per-sample Dice."""
    configurations = plan.get("configurations") or {}
    return bool(configurations.get(plan.get("configuration"), {}).get("batch_dice", False))


class SegmentationLoss(torch.nn.Module):
    """Dice over the foreground classes + cross-entropy (softmax over all classes, integer
    labels), as nnU-Net's ``DC_and_CE_loss`` (``do_bg=False``): the background is in the
    softmax and the cross-entropy but not in the Dice term. ``batch_dice``: one Dice over the
    whole batch (nnU-Net's plans' ``batch_dice``) instead of one per sample.

    ``forward(output, label)``: ``output`` is (B, C, X, Y, Z) logits, or (B, H, C, X, Y, Z) for
    the H heads of a deep-supervised ``DynUNet`` in training mode (every head already at the
    label's size; weights :func:`head_weights`); ``label`` is (B, 1, X, Y, Z). Returns the
    scalar loss.
    """

    def __init__(self, batch_dice: bool = False) -> None:
        super().__init__()
        self.dice_ce = DiceCELoss(
            to_onehot_y=True, softmax=True, include_background=False, batch=batch_dice
        )

    def forward(self, output: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        if output.dim() == label.dim():
            return self.dice_ce(output, label)
        heads = torch.unbind(output, dim=1)
        weights = head_weights(len(heads))
        return sum(w * self.dice_ce(h, label) for w, h in zip(weights, heads, strict=True))
