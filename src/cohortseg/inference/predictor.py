"""The predictor: class probabilities of one volume by sliding-window inference on the plan's
grid, with test-time augmentation (mirroring) where asked."""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence

import torch
from monai.inferers import sliding_window_inference

# The spatial axes that training mirrors (each with probability 0.5), so a trained network has
# seen every mirror image of a volume; test-time augmentation (cohortseg.inference.shard) mirrors
# these.
FLIP_AXES = (0, 1, 2)


@torch.no_grad()
def predict_probabilities(
    net: torch.nn.Module, image: torch.Tensor, plan: Mapping, inference: Mapping
) -> torch.Tensor:
    """Class probabilities of a (1, X, Y, Z) preprocessed image by sliding-window inference
    over windows of the plan's ``patch_size`` (``inference.overlap``,
    ``inference.sw_batch_size``) with Gaussian blending; bf16 autocast on CUDA for float32
    input. Returns (C, X, Y, Z) float32."""
    device = image.device
    autocast = device.type == "cuda" and image.dtype == torch.float32
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
        logits = sliding_window_inference(
            image[None],
            roi_size=tuple(plan["patch_size"]),
            sw_batch_size=int(inference["sw_batch_size"]),
            predictor=net,
            overlap=float(inference["overlap"]),
            mode="gaussian",
        )
    return torch.softmax(logits[0].float(), dim=0)


def mirror_flips(tta: str, axes: Sequence[int] = FLIP_AXES) -> list[tuple[int, ...]]:
    """The spatial axes (0, 1, 2 of the plan's RAS grid) that each test-time-augmentation member
    mirrors: ``none``, one member that mirrors nothing; ``mirror``, every subset of ``axes``
    (those training mirrors, :data:`cohortseg.inference.predictor.FLIP_AXES`: 8 members for 3 axes;
    for a 2D image the in-plane axes 0 and 1: 4 members)."""
    if tta == "none":
        return [()]
    if tta == "mirror":
        n = len(axes)
        return [c for r in range(n + 1) for c in itertools.combinations(tuple(axes), r)]
    raise ValueError(f"unknown inference.tta {tta!r} (none or mirror)")


@torch.no_grad()
def predict_with_tta(
    net: torch.nn.Module, image: torch.Tensor, plan: Mapping, inference: Mapping
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Class probabilities of a (1, X, Y, Z) preprocessed image averaged over the
    test-time-augmentation members of ``inference.tta`` (:func:`mirror_flips`): each member
    mirrors the image, is segmented (:func:`predict_probabilities`) and mirrored back. The
    members are summed in a fixed order, so the result does not depend on anything else.

    Returns the (C, X, Y, Z) float32 mean probabilities and, with more than one member, each
    member's (X, Y, Z) uint8 argmax labels (an empty list with one).
    """
    in_plane = [a for a in FLIP_AXES if image.shape[a + 1] > 1]  # mirroring one slice: no-op
    flips = mirror_flips(inference["tta"], in_plane)
    total: torch.Tensor | None = None
    members = []
    for axes in flips:
        dims = [axis + 1 for axis in axes]  # dimension 0 is the channel (or class)
        probs = predict_probabilities(net, image.flip(dims) if dims else image, plan, inference)
        if dims:
            probs = probs.flip(dims)
        if len(flips) > 1:
            members.append(probs.argmax(dim=0).to(torch.uint8))
        total = probs if total is None else total.add_(probs)
    assert total is not None
    return (total.div_(len(flips)) if len(flips) > 1 else total), members
