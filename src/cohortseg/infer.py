"""Sliding-window inference: one model, many subjects, predictions mapped back to each
subject's native grid."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from monai.inferers import sliding_window_inference
from tqdm import tqdm

from cohortseg.errors import CohortsegError, InvalidInputError
from cohortseg.io import load_nifti, save_nifti
from cohortseg.models import build_network
from cohortseg.preprocess import prepare_image, restore_labels

log = logging.getLogger(__name__)


def pick_device(device: str = "auto") -> torch.device:
    """``auto`` → the first CUDA device if there is one, else the CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def load_model(checkpoint: str, device: torch.device) -> tuple[torch.nn.Module, dict]:
    """Load a training checkpoint; returns the network in eval mode and the plan it was
    trained with."""
    state = torch.load(checkpoint, map_location="cpu", weights_only=False)
    plan = state["plan"]
    net = build_network(state["model_config"], len(plan["classes"]) + 1)
    net.load_state_dict(state["model_state"])
    return net.to(device).eval(), plan


@torch.no_grad()
def predict_probabilities(
    net: torch.nn.Module,
    image: torch.Tensor,
    patch_size: Sequence[int],
    overlap: float,
    sw_batch_size: int,
) -> torch.Tensor:
    """Class probabilities of a (1, X, Y, Z) preprocessed image by sliding-window inference
    with Gaussian blending; bf16 autocast on CUDA. Returns (C, X, Y, Z) float32."""
    device = image.device
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
        logits = sliding_window_inference(
            image[None],
            roi_size=tuple(patch_size),
            sw_batch_size=sw_batch_size,
            predictor=net,
            overlap=overlap,
            mode="gaussian",
        )
    return torch.softmax(logits[0].float(), dim=0)


def segment(
    net: torch.nn.Module,
    data: np.ndarray,
    affine: np.ndarray,
    plan: Mapping,
    inference: Mapping,
    device: torch.device,
) -> np.ndarray:
    """Segment one native (X, Y, Z) image; returns a uint8 label map of the same shape (and,
    implicitly, the same affine)."""
    image, geometry = prepare_image(data, affine, plan, device)
    probs = predict_probabilities(
        net, image, plan["patch_size"], float(inference["overlap"]), int(inference["sw_batch_size"])
    )
    return restore_labels(probs, geometry)


@dataclass
class ShardItem:
    """One subject of a shard: where its image is and where its segmentation goes."""

    subject: str
    image: str
    output: str


def segment_shard(
    checkpoint: str, items: Sequence[ShardItem], inference: Mapping
) -> list[InvalidInputError]:
    """Segment every subject of a shard with one model load.

    A subject whose input cannot be read is reported and skipped; the others are still
    segmented. Returns the per-subject errors (empty when all succeeded).
    """
    device = pick_device(inference.get("device", "auto"))
    net, plan = load_model(checkpoint, device)
    failures: list[InvalidInputError] = []
    start = time.perf_counter()
    for item in tqdm(items, desc="segment", mininterval=5):
        try:
            data, affine = load_nifti(item.image, item.subject)
        except InvalidInputError as exc:
            log.error("%s", exc)
            failures.append(exc)
            continue
        labels = segment(net, data, affine, plan, inference, device)
        save_nifti(item.output, labels, affine, dtype=np.uint8)
        log.info("%s: segmented %s -> %s", item.subject, item.image, item.output)
    elapsed = time.perf_counter() - start
    log.info("shard: %d subjects in %.1f s (%d failed)", len(items), elapsed, len(failures))
    return failures


def check_shard(failures: Sequence[InvalidInputError]) -> None:
    """Raise one error naming every failed subject of a shard."""
    if failures:
        lines = "\n".join(str(f) for f in failures)
        raise CohortsegError(f"{len(failures)} subject(s) of this shard failed:\n{lines}")
