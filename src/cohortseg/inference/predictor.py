"""The predictor: class probabilities of one volume by sliding-window inference on the plan's
grid, with test-time augmentation (mirroring) where asked. Its settings come from one function,
:func:`predictor_config`, whoever builds it: the inference shard job, training's validation,
calibration, and the MONAI bundle (:class:`Predictor`, a MONAI ``Inferer``)."""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from monai.inferers import Inferer, sliding_window_inference

# The spatial axes that training mirrors (each with probability 0.5), so a trained network has
# seen every mirror image of a volume; test-time augmentation (cohortseg.inference.shard) mirrors
# these.
FLIP_AXES = (0, 1, 2)


@dataclass(frozen=True)
class PredictorConfig:
    """How the predictor segments a volume on the plan's grid.

    Attributes
    ----------
    roi_size
        (X, Y, Z) sliding-window size, voxels: the plan's ``patch_size``, the size trained on.
    sw_batch_size
        Windows through the network at once (``inference.sw_batch_size``).
    overlap
        Fraction of a window shared with its neighbour along each axis (``inference.overlap``).
    mode
        How overlapping windows are blended: ``gaussian`` (weights falling off from a window's
        centre, as nnU-Net blends).
    tta
        Test-time augmentation (``inference.tta``): ``none``, or ``mirror`` (every subset of
        :data:`FLIP_AXES` mirrored, :func:`mirror_flips`).
    """

    roi_size: tuple[int, ...]
    sw_batch_size: int
    overlap: float
    mode: str
    tta: str


def predictor_config(plan: Mapping, inference: Mapping) -> PredictorConfig:
    """The predictor's settings from the plan (``patch_size``) and the ``inference`` config
    section (``sw_batch_size``, ``overlap``, ``tta``; ``tta`` is ``none`` where absent)."""
    tta = str(inference.get("tta", "none"))
    mirror_flips(tta)  # an unknown value fails here, before any volume is segmented
    return PredictorConfig(
        roi_size=tuple(int(n) for n in plan["patch_size"]),
        sw_batch_size=int(inference["sw_batch_size"]),
        overlap=float(inference["overlap"]),
        mode="gaussian",
        tta=tta,
    )


@torch.no_grad()
def predict_probabilities(
    net: torch.nn.Module, image: torch.Tensor, plan: Mapping, inference: Mapping
) -> torch.Tensor:
    """Class probabilities of a (1, X, Y, Z) preprocessed image by sliding-window inference
    over windows of the plan's ``patch_size`` (``inference.overlap``,
    ``inference.sw_batch_size``) with Gaussian blending (:func:`predictor_config`); bf16
    autocast on CUDA for float32 input. No test-time augmentation (:func:`predict_with_tta`).
    Returns (C, X, Y, Z) float32."""
    return _window_probabilities(net, image, predictor_config(plan, inference))


def _window_probabilities(
    net: torch.nn.Module, image: torch.Tensor, config: PredictorConfig
) -> torch.Tensor:
    """(C, X, Y, Z) float32 class probabilities of a (1, X, Y, Z) image by one sliding-window
    pass with ``config``'s windows and blending."""
    device = image.device
    autocast = device.type == "cuda" and image.dtype == torch.float32
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
        logits = sliding_window_inference(
            image[None],
            roi_size=config.roi_size,
            sw_batch_size=config.sw_batch_size,
            predictor=net,
            overlap=config.overlap,
            mode=config.mode,
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
    mirrors the image, is segmented (one sliding-window pass, :func:`predict_probabilities`)
    and mirrored back. The members are summed in a fixed order, so the result does not depend
    on anything else. Settings: :func:`predictor_config`.

    Returns the (C, X, Y, Z) float32 mean probabilities and, with more than one member, each
    member's (X, Y, Z) uint8 argmax labels (an empty list with one).
    """
    config = predictor_config(plan, inference)
    in_plane = [a for a in FLIP_AXES if image.shape[a + 1] > 1]  # mirroring one slice: no-op
    flips = mirror_flips(config.tta, in_plane)
    total: torch.Tensor | None = None
    members = []
    for axes in flips:
        dims = [axis + 1 for axis in axes]  # dimension 0 is the channel (or class)
        probs = _window_probabilities(net, image.flip(dims) if dims else image, config)
        if dims:
            probs = probs.flip(dims)
        if len(flips) > 1:
            members.append(probs.argmax(dim=0).to(torch.uint8))
        total = probs if total is None else total.add_(probs)
    assert total is not None
    return (total.div_(len(flips)) if len(flips) > 1 else total), members


class Predictor(Inferer):
    """The predictor as a MONAI ``Inferer`` (a bundle's ``inferer``, MONAI Label's, an ignite
    evaluator's): ``predictor(inputs, network)`` segments each (1, X, Y, Z) image of the
    (B, 1, X, Y, Z) batch ``inputs`` with :func:`predict_with_tta` and returns the (B, C, X, Y,
    Z) float32 class probabilities (softmax already applied: average them, take the argmax).

    Parameters
    ----------
    plan
        The plan (``patch_size``).
    inference
        The ``inference`` config section (``overlap``, ``sw_batch_size``, ``tta``).
    """

    def __init__(self, plan: Mapping, inference: Mapping) -> None:
        super().__init__()
        self.plan = dict(plan)
        self.inference = dict(inference)
        predictor_config(self.plan, self.inference)  # bad settings fail when it is built

    def __call__(self, inputs: torch.Tensor, network: torch.nn.Module, *args, **kwargs):
        probabilities = [
            predict_with_tta(network, image, self.plan, self.inference)[0] for image in inputs
        ]
        return torch.stack(probabilities)
