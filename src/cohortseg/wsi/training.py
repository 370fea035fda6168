"""The slides' training task for the one trainer (:func:`cohortseg.training.loop.fit`): a 2D
network on RGB patches normalised to [0, 1], flips, 90° rotations and colour jitter drawn per
patch from its seed, and the validation Dice of the val slides, each segmented tile by tile as
``wsi_infer`` segments it. Device, precision, resume, stop signals and DDP/Horovod are the
trainer's. Also the slide model loaded back, and the predictor that segments slides with it.
"""

from __future__ import annotations

import logging
import os
import tempfile
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from cohortseg.core.cohort import Subject
from cohortseg.core.errors import CohortsegError
from cohortseg.core.io import read_json, read_tsv
from cohortseg.networks.build import build_network, read_checkpoint
from cohortseg.training.loop import fit
from cohortseg.training.tasks import TrainingTask
from cohortseg.wsi.cohort import slide_paths
from cohortseg.wsi.inference import Predictor, segment_slide
from cohortseg.wsi.labels import open_labels
from cohortseg.wsi.slides import open_slide
from cohortseg.wsi.stages import label_dice, plan_hash, read_mask_png

log = logging.getLogger(__name__)


def rgb_to_input(rgb: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """(n, 3, H, W) uint8 RGB → the network's input in [0, 1] as ``dtype``, on ``rgb``'s
    device; the one normalisation training and inference share."""
    return rgb.to(dtype) / 255.0


def slide_input(image: torch.Tensor, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """A loaded batch of (B, 3, H, W) uint8 patches onto ``device`` (as uint8: a quarter of
    the bytes of float32), then :func:`rgb_to_input` there."""
    return rgb_to_input(image.to(device, non_blocking=True), dtype)


def augment_rgb_sample(
    image: torch.Tensor, label: torch.Tensor, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Augment one (3, H, W) float patch in [0, 1] and its (1, H, W) labels with the transform
    ``seed`` draws: a rotation by a multiple of 90° (a slide has no up), a flip of each axis
    (p 0.5), contrast × U(0.9, 1.1) about 0.5 and brightness + U(-0.1, 0.1), clipped to [0, 1].
    The draws come from a CPU generator of the seed alone, so the result does not depend on
    the device, the batch or the rank."""
    generator = torch.Generator().manual_seed(seed)
    quarter_turns = int(torch.randint(0, 4, (1,), generator=generator))
    flips = (torch.rand(2, generator=generator) < 0.5).tolist()
    gain, shift = (0.9 + 0.2 * torch.rand(2, generator=generator)).tolist()
    image, label = (
        torch.rot90(image, quarter_turns, (1, 2)),
        torch.rot90(label, quarter_turns, (1, 2)),
    )
    dims = [d for d, flip in ((1, flips[0]), (2, flips[1])) if flip]
    if dims:
        image, label = torch.flip(image, dims), torch.flip(label, dims)
    image = ((image - 0.5) * gain + 0.5 + (shift - 1.0)).clamp(0, 1)
    return image, label


def augment_rgb(
    image: torch.Tensor, label: torch.Tensor, seeds: Sequence[int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Augment a (B, 3, H, W) batch in [0, 1] and its (B, 1, H, W) labels on their device,
    sample ``k`` with ``seeds[k]`` (:func:`augment_rgb_sample`)."""
    pairs = [augment_rgb_sample(image[k], label[k], s) for k, s in enumerate(seeds)]
    return torch.stack([p[0] for p in pairs]), torch.stack([p[1] for p in pairs])


@dataclass(frozen=True)
class SlideValidation:
    """The validation slides and how they are segmented (as ``wsi_infer`` segments).

    Attributes
    ----------
    slides
        Labelled slides the tissue stage prepared (:func:`validation_slides`).
    pixel_size_um
        ``wsi.pixel_size_um``: µm per level-0 pixel for slides that record none.
    overlap, sw_batch_size
        ``wsi.inference``'s window overlap (fraction) and windows per batch.
    max_memory_mb
        ``wsi.max_memory_mb``: the blending buffers' bound.
    """

    slides: Sequence[Subject] = ()
    pixel_size_um: float | None = None
    overlap: float = 0.25
    sw_batch_size: int = 4
    max_memory_mb: float = 256.0


def slide_dice(
    net: torch.nn.Module,
    s: Subject,
    classes: Sequence[str],
    validation: SlideValidation,
    device: torch.device,
    scratch: Path,
) -> list[float]:
    """Dice per class of one labelled slide segmented by ``net`` on its tissue at its plan's
    level (:func:`cohortseg.wsi.inference.segment_slide` into the HDF5 file ``scratch``,
    removed after; :func:`cohortseg.wsi.stages.label_dice`): NaN where neither has the class."""
    paths = slide_paths(s.subject)
    plan, tissue = read_json(paths["plan"]), read_mask_png(paths["tissue"])
    slide = open_slide(s.subject, s.image, validation.pixel_size_um)
    try:
        segment_slide(
            slide,
            plan["level"],
            slide_predictor(net, device),
            len(classes),
            tissue,
            plan["tissue_level"],
            scratch,
            window=plan["patch_size"][0],
            overlap=validation.overlap,
            batch_size=validation.sw_batch_size,
            max_memory_mb=validation.max_memory_mb,
        )
        labels = open_labels(slide, s.label, classes)
        return label_dice(scratch, labels, plan["downsample"], len(classes))
    finally:
        slide.close()
        scratch.unlink(missing_ok=True)


def slide_validation_dice(
    net: torch.nn.Module,
    classes: Sequence[str],
    validation: SlideValidation,
    device: torch.device,
) -> list[float]:
    """Mean Dice per class over the validation slides (:func:`slide_dice`), a slide counting
    for the classes it or its segmentation has; NaN per class when none does (or there are
    no validation slides)."""
    if not validation.slides:
        return [float("nan")] * len(classes)
    with tempfile.TemporaryDirectory(prefix="cohortseg-slide-val-") as tmp:
        scores = [
            slide_dice(net, s, classes, validation, device, Path(tmp) / f"{k}.h5")
            for k, s in enumerate(validation.slides)
        ]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a class no slide has: NaN
        return [float(d) for d in np.nanmean(np.asarray(scores, dtype=np.float64), axis=0)]


def slide_task(classes: Sequence[str], validation: SlideValidation) -> TrainingTask:
    """The slides' task: a 2D network of 3 input channels on (B, 3, H, W) uint8 RGB patches
    (:func:`slide_input`), :func:`augment_rgb`, Dice + cross-entropy, and
    :func:`slide_validation_dice` of ``validation``'s slides."""

    def validate(net: torch.nn.Module, device: torch.device) -> list[float]:
        return slide_validation_dice(net, classes, validation, device)

    return TrainingTask(
        name="slide",
        spatial_dims=2,
        in_channels=3,
        to_input=slide_input,
        augment=augment_rgb,
        validate=validate,
    )


def slide_training_plan(
    classes: Sequence[str], target_pixel_size_um: float, patch_size: int
) -> dict:
    """What the slide model is trained for, kept in its checkpoint: the classes, the pixel
    size (µm) and the patch side (pixels) of the patch stores, and their ``hash``
    (:func:`cohortseg.wsi.stages.plan_hash`, which the stores must carry)."""
    return {
        "classes": list(classes),
        "patch_size": [int(patch_size), int(patch_size)],
        "target_pixel_size_um": float(target_pixel_size_um),
        "hash": plan_hash(classes, target_pixel_size_um, patch_size),
    }


def validation_slides(
    slides: Sequence[Subject], tissue_tables: Sequence[str | os.PathLike[str]]
) -> list[Subject]:
    """The slides of split ``val`` that the tissue stage prepared without a problem (its
    shard ``tissue_tables`` list them), in sheet order.

    Raises
    ------
    CohortsegError
        If one of them has no label.
    """
    usable = {r["subject"] for t in tissue_tables for r in read_tsv(t) if not r.get("problem")}
    val = [s for s in slides if s.split == "val" and s.subject in usable]
    unlabelled = [s.subject for s in val if not s.label]
    if unlabelled:
        raise CohortsegError(
            f"slides {', '.join(unlabelled)}: split val but no label; a validation slide needs"
            " one (the sheet's label column: a mask image or GeoJSON), or give it split test"
        )
    return val


def train_slide_model(
    config: Mapping,
    plan: Mapping,
    stores: Sequence[str],
    validation: SlideValidation,
    out_dir: str | os.PathLike[str],
    checkpoint_dir: str | os.PathLike[str] | None = None,
) -> dict:
    """Train the slide network on slide patch stores with the one trainer
    (:func:`cohortseg.training.loop.fit` of :func:`slide_task`) and write ``best.pt``,
    ``last.pt``, ``training_log.tsv`` and ``learning_curve.png`` into ``out_dir``; ``last.pt``
    stays in ``checkpoint_dir`` while training, and a rerun resumes from it.

    Parameters
    ----------
    config
        ``model`` (the ``wsi.model`` section) and ``training`` (``wsi.training``), complete.
    plan
        :func:`slide_training_plan` of the stores.
    stores
        The training slides' HDF5 patch stores: (N, 3, H, W) uint8 RGB and (N, H, W) labels.
    validation
        The validation slides and how they are segmented.
    out_dir, checkpoint_dir
        As :func:`cohortseg.training.loop.fit`'s.

    Returns
    -------
    dict
        The last epoch's log row.
    """
    task = slide_task(plan["classes"], validation)
    return fit(task, config, plan, stores, out_dir, checkpoint_dir)


def load_slide_model(
    checkpoint: str | os.PathLike[str], device: torch.device
) -> tuple[torch.nn.Module, dict]:
    """A slide network from its checkpoint, in eval mode on ``device``, and its plan."""
    state = read_checkpoint(checkpoint)
    plan = state["plan"]
    shape = int(state.get("spatial_dims", 2)), int(state.get("in_channels", 3))
    net = build_network(state["model_config"], len(plan["classes"]) + 1, *shape)
    net.load_state_dict(state["model_state"])
    return net.to(device).eval(), plan


def slide_predictor(net: torch.nn.Module, device: torch.device) -> Predictor:
    """``predict(rgb)`` for :func:`cohortseg.wsi.inference.segment_slide`: (n, 3, T, T) uint8 →
    (n, C, T, T) float32 softmax probabilities (the network in its own dtype)."""
    dtype = next(net.parameters()).dtype

    @torch.no_grad()
    def predict(rgb: np.ndarray) -> np.ndarray:
        x = rgb_to_input(torch.from_numpy(np.ascontiguousarray(rgb)).to(device), dtype)
        return torch.softmax(net(x).float(), 1).cpu().numpy()

    return predict
