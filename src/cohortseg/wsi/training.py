"""A 2D network for slides trained on their RGB patch stores (a short local loop sharing the
volume trainer's step), saved as a cohortseg checkpoint, and the predictor that segments
slides with it."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence

import numpy as np
import torch

from cohortseg.networks.build import build_network, read_checkpoint
from cohortseg.preprocessing.patches import PatchDataset
from cohortseg.training.batches import seed_everything
from cohortseg.training.checkpoints import save_checkpoint
from cohortseg.training.loop import train_step
from cohortseg.wsi.inference import Predictor

log = logging.getLogger(__name__)


def rgb_to_input(rgb: torch.Tensor) -> torch.Tensor:
    """(n, 3, H, W) uint8 RGB → the network's float32 input in [0, 1]; the one normalisation
    training and inference share."""
    return rgb.float() / 255.0


def augment_rgb(
    image: torch.Tensor, label: torch.Tensor, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random flips, 90° rotations (a slide has no up) and brightness/contrast jitter
    (± 10 %) of a (n, 3, H, W) float batch in [0, 1] and its (n, 1, H, W) labels."""
    out_i, out_l = [], []
    for img, lab in zip(image, label, strict=True):
        k, fy, fx = (
            torch.randint(0, 4, (1,), generator=generator).item(),
            *(torch.rand(2, generator=generator) < 0.5).tolist(),
        )
        dims = [d for d, f in ((1, fy), (2, fx)) if f]
        img, lab = torch.rot90(img, k, (1, 2)), torch.rot90(lab, k, (1, 2))
        if dims:
            img, lab = torch.flip(img, dims), torch.flip(lab, dims)
        gain, shift = 0.9 + 0.2 * torch.rand(2, generator=generator)
        img = ((img - 0.5) * gain + 0.5 + (shift - 1.0)).clamp(0, 1)
        out_i.append(img)
        out_l.append(lab)
    return torch.stack(out_i), torch.stack(out_l)


def train_slide_model(
    stores: Sequence[str | os.PathLike[str]],
    classes: Sequence[str],
    model: Mapping,
    plan: Mapping,
    checkpoint: str | os.PathLike[str],
    steps: int = 200,
    batch_size: int = 8,
    learning_rate: float = 3e-3,
    seed: int = 0,
    device: str = "cpu",
) -> list[float]:
    """Train a 2D network (``model`` section; 3 input channels, one output per class and
    background) on slide patch stores for ``steps`` steps of Dice + cross-entropy with AdamW,
    and save it to ``checkpoint`` with ``plan`` (the slides' level choice, patch size and
    classes). Returns the loss of each step."""
    from monai.losses import DiceCELoss

    seed_everything(seed)
    dataset = PatchDataset(stores, plan_hash=plan["hash"])
    generator = torch.Generator().manual_seed(seed)
    net = build_network(model, len(classes) + 1, spatial_dims=2, in_channels=3).to(device)
    optimizer = torch.optim.AdamW(net.parameters(), lr=learning_rate, weight_decay=3e-5)
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
    net.train()
    losses = []
    for step in range(steps):
        rows = torch.randint(0, len(dataset), (batch_size,), generator=generator).tolist()
        items = [dataset[i] for i in rows]
        image = rgb_to_input(torch.stack([i for i, _ in items]))
        label = torch.stack([lab for _, lab in items])
        image, label = augment_rgb(image, label, generator)
        loss = train_step(net, optimizer, loss_fn, image.to(device), label.to(device))
        losses.append(float(loss))
        if step % 20 == 0 or step == steps - 1:
            log.info("step %d/%d: loss %.4f", step + 1, steps, losses[-1])
    state = {
        "model_state": net.state_dict(),
        "model_config": dict(model),
        "plan": {**plan, "classes": list(classes)},
        "spatial_dims": 2,
        "in_channels": 3,
        "steps": steps,
    }
    save_checkpoint(checkpoint, state)
    return losses


def load_slide_model(
    checkpoint: str | os.PathLike[str], device: torch.device
) -> tuple[torch.nn.Module, dict]:
    """A slide network from its checkpoint, in eval mode on ``device``, and its plan."""
    state = read_checkpoint(checkpoint)
    plan = state["plan"]
    net = build_network(state["model_config"], len(plan["classes"]) + 1, 2, 3)
    net.load_state_dict(state["model_state"])
    return net.to(device).eval(), plan


def slide_predictor(net: torch.nn.Module, device: torch.device) -> Predictor:
    """``predict(rgb)`` for :func:`cohortseg.wsi.inference.segment_slide`: (n, 3, T, T) uint8 →
    (n, C, T, T) float32 softmax probabilities."""

    @torch.no_grad()
    def predict(rgb: np.ndarray) -> np.ndarray:
        x = rgb_to_input(torch.from_numpy(np.ascontiguousarray(rgb))).to(device)
        return torch.softmax(net(x).float(), 1).cpu().numpy()

    return predict
