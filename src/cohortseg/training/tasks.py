"""What a modality supplies to the one trainer (:func:`cohortseg.training.loop.fit`): a
:class:`TrainingTask` — the network's shape, how a loaded batch becomes the network's input on
the device, the augmentation (drawn per sample from its seed, so that a resumed run is bit-exact),
the loss and the validation Dice — and the task of 3D volumes (and of 2D pictures, which travel
as one-slice volumes), :func:`volume_task`. Everything else (device, precision, batch order,
checkpoints and resume, stop signals, DDP/Horovod, the log) is the trainer's, the same for
every task.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from cohortseg.core.cohort import Subject
from cohortseg.core.io import load_nifti
from cohortseg.evaluation.metrics import dice_hd95
from cohortseg.inference.predictor import predict_probabilities
from cohortseg.networks.build import build_network
from cohortseg.training.augment import augment
from cohortseg.training.losses import SegmentationLoss

#: ``to_input(image, device, dtype)``: a loaded batch's images → the network's input.
ToInput = Callable[[torch.Tensor, torch.device, torch.dtype], torch.Tensor]

#: ``augment(image, label, seeds)``: a batch on its device, each sample drawn from its seed.
Augment = Callable[[torch.Tensor, torch.Tensor, Sequence[int]], tuple[torch.Tensor, torch.Tensor]]

#: ``validate(net, device)``: mean Dice per foreground class (NaN where nothing to score).
Validate = Callable[[torch.nn.Module, torch.device], list[float]]


@dataclass(frozen=True)
class TrainingTask:
    """What one modality trains: the parts of training that differ between modalities.

    Attributes
    ----------
    name
        ``volume``, ``slide``…: kept in checkpoints and their resume key.
    spatial_dims, in_channels
        The network's: 3 and 1 for volumes, 2 and 3 (RGB) for slides.
    to_input
        A loaded batch's images, as the patch stores give them (B, C, *patch), onto the
        device in the training precision, normalised as the network expects.
    augment
        The augmentation of a batch already on the device, each sample's transform drawn
        from its seed alone (:meth:`cohortseg.training.batches.EpochBatchSampler.sample_seeds`).
    validate
        Mean Dice per foreground class of the network (in eval mode, without gradients) on
        the task's validation data; NaN per class when there is none.
    loss
        Builds the training loss ``loss(output, label)``.
    """

    name: str
    spatial_dims: int
    in_channels: int
    to_input: ToInput
    augment: Augment
    validate: Validate
    loss: Callable[[], torch.nn.Module] = SegmentationLoss

    def network(
        self, model: Mapping, n_classes: int, device: torch.device, dtype: torch.dtype
    ) -> torch.nn.Module:
        """The ``model`` section's network for this task (its spatial dims and input channels)
        with ``n_classes`` outputs, on ``device`` in ``dtype``."""
        net = build_network(model, n_classes, self.spatial_dims, self.in_channels)
        return net.to(device=device, dtype=dtype)

    def batch_on_device(
        self, image: torch.Tensor, label: torch.Tensor, device: torch.device, dtype: torch.dtype
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """A loaded batch on ``device``: the network's input in ``dtype`` (:attr:`to_input`)
        and the (B, 1, *patch) integer labels."""
        return self.to_input(image, device, dtype), label.to(device, non_blocking=True)

    def checkpoint_fields(self) -> dict[str, Any]:
        """What a checkpoint records of the task, so that its network can be rebuilt."""
        return {
            "task": self.name,
            "spatial_dims": self.spatial_dims,
            "in_channels": self.in_channels,
        }


def volume_input(image: torch.Tensor, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """(B, 1, X, Y, Z) float32 patches (already normalised by the plan) → ``device``, ``dtype``."""
    return image.to(device, dtype=dtype, non_blocking=True)


@torch.no_grad()
def validation_dice(
    net: torch.nn.Module,
    subjects: Sequence[Subject],
    plan: Mapping,
    inference: Mapping,
    device: torch.device,
) -> list[float]:
    """Mean Dice per foreground class over the validation subjects, each segmented by
    sliding-window inference on the plan's grid (NaN per class when there are none)."""
    n_classes = len(plan["classes"]) + 1
    dtype = next(net.parameters()).dtype
    net.eval()
    scores = []
    for s in subjects:
        image, affine = load_nifti(s.image, s.subject)
        label, _ = load_nifti(s.label, s.subject, dtype=np.uint8)
        tensor = torch.as_tensor(image, device=device, dtype=dtype)[None]
        probs = predict_probabilities(net, tensor, plan, inference)
        pred = torch.argmax(probs, 0).to(torch.uint8).cpu().numpy()
        dice, _ = dice_hd95(pred, label, affine, n_classes)
        scores.append(dice)
    net.train()
    return np.mean(np.asarray(scores), axis=0).tolist() if scores else [math.nan] * (n_classes - 1)


def volume_task(
    augmentation: Mapping[str, Any],
    plan: Mapping,
    inference: Mapping,
    val_subjects: Sequence[Subject] = (),
) -> TrainingTask:
    """The task of 3D volumes (and 2D pictures as one-slice volumes): a 3D network of one
    input channel, the volume augmentation of ``training.augmentation``
    (:func:`cohortseg.training.augment.augment`), Dice + cross-entropy, and the validation Dice
    of ``val_subjects`` (preprocessed, on the plan's grid) segmented by the predictor with the
    ``inference`` keys (:func:`validation_dice`)."""
    subjects = list(val_subjects)

    def augment_volumes(
        image: torch.Tensor, label: torch.Tensor, seeds: Sequence[int]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return augment(image, label, seeds, augmentation)

    def validate(net: torch.nn.Module, device: torch.device) -> list[float]:
        return validation_dice(net, subjects, plan, inference, device)

    return TrainingTask(
        name="volume",
        spatial_dims=3,
        in_channels=1,
        to_input=volume_input,
        augment=augment_volumes,
        validate=validate,
    )
