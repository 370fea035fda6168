"""Training: patches from the HDF5 stores, Dice + cross-entropy, AdamW, validation Dice each
epoch, best and last checkpoints and a per-epoch log."""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from monai.losses import DiceCELoss
from torch.utils.data import DataLoader, RandomSampler

from cohortseg.infer import pick_device, predict_probabilities
from cohortseg.io import atomic_write, load_nifti, write_tsv
from cohortseg.metrics import dice_hd95
from cohortseg.models import build_network
from cohortseg.patches import PatchDataset
from cohortseg.report import plot_learning_curve

log = logging.getLogger(__name__)


@dataclass
class ValidationSubject:
    """A preprocessed validation subject (image and label on the plan's grid)."""

    subject: str
    image: str
    label: str


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch, and ask torch for deterministic kernels."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)


def augment(
    image: torch.Tensor, label: torch.Tensor, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random flips per axis, intensity scaling and shift, and Gaussian noise, on the batch's
    device. ``image`` is (B, 1, X, Y, Z), ``label`` (B, 1, X, Y, Z)."""
    r = torch.rand(6, generator=generator)
    for axis in range(3):
        if r[axis] < 0.5:
            image, label = image.flip(axis + 2), label.flip(axis + 2)
    scale = 0.9 + 0.2 * float(r[3])
    shift = 0.2 * (float(r[4]) - 0.5)
    image = image * scale + shift
    if r[5] < 0.3:
        noise = torch.randn(image.shape, generator=generator).to(image.device)
        image = image + 0.05 * noise
    return image, label


def lr_at(epoch: int, epochs: int, base: float) -> float:
    """Polynomial (power 0.9) decay of the learning rate over the epochs, as in nnU-Net."""
    return base * (1 - epoch / max(epochs, 1)) ** 0.9


@torch.no_grad()
def validate(
    net: torch.nn.Module,
    subjects: Sequence[ValidationSubject],
    plan: Mapping,
    inference: Mapping,
    device: torch.device,
) -> list[float]:
    """Mean Dice per foreground class over the validation subjects (on the plan's grid)."""
    n_classes = len(plan["classes"]) + 1
    net.eval()
    scores = []
    for s in subjects:
        image, affine = load_nifti(s.image, s.subject)
        label, _ = load_nifti(s.label, s.subject, dtype=np.uint8)
        tensor = torch.as_tensor(image, device=device)[None]
        probs = predict_probabilities(
            net,
            tensor,
            plan["patch_size"],
            float(inference["overlap"]),
            int(inference["sw_batch_size"]),
        )
        pred = torch.argmax(probs, 0).to(torch.uint8).cpu().numpy()
        dice, _ = dice_hd95(pred, label, affine, n_classes)
        scores.append(dice)
    net.train()
    return np.mean(np.asarray(scores), axis=0).tolist() if scores else [math.nan] * (n_classes - 1)


def save_checkpoint(path: str | Path, state: Mapping) -> None:
    """Write a checkpoint atomically."""
    with atomic_write(path) as tmp:
        torch.save(dict(state), tmp)


def train(
    config: Mapping,
    plan: Mapping,
    stores: Sequence[str],
    val_subjects: Sequence[ValidationSubject],
    out_dir: str | Path,
) -> dict:
    """Train a network on the patch stores and write ``best.pt``, ``last.pt``,
    ``training_log.tsv`` and ``learning_curve.png`` into ``out_dir``.

    Returns the final epoch's log row.
    """
    out = Path(out_dir)
    cfg = config["training"]
    classes = list(plan["classes"])
    seed_everything(int(cfg["seed"]))
    device = pick_device(cfg.get("device", "auto"))
    dataset = PatchDataset(stores, plan_hash=plan["hash"])
    batch_size = int(cfg["batch_size"])
    steps = int(cfg.get("steps_per_epoch") or math.ceil(len(dataset) / batch_size))
    generator = torch.Generator().manual_seed(int(cfg["seed"]))
    sampler = RandomSampler(
        dataset, replacement=True, num_samples=steps * batch_size, generator=generator
    )
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=int(cfg["num_workers"]),
        persistent_workers=int(cfg["num_workers"]) > 0,
        drop_last=True,
    )
    net = build_network(config["model"], len(classes) + 1).to(device)
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
    optimizer = torch.optim.AdamW(
        net.parameters(), lr=float(cfg["learning_rate"]), weight_decay=float(cfg["weight_decay"])
    )
    aug_gen = torch.Generator().manual_seed(int(cfg["seed"]) + 1)
    epochs = int(cfg["epochs"])
    rows: list[dict] = []
    best = -math.inf
    columns = ["epoch", "train_loss", "val_dice_mean"] + [f"val_dice_{c}" for c in classes]
    columns += ["learning_rate", "seconds"]
    net.train()
    for epoch in range(epochs):
        start = time.perf_counter()
        lr = lr_at(epoch, epochs, float(cfg["learning_rate"]))
        for group in optimizer.param_groups:
            group["lr"] = lr
        losses = []
        for image, label in loader:
            image, label = augment(image.to(device), label.to(device), aug_gen)
            optimizer.zero_grad(set_to_none=True)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
                loss = loss_fn(net(image), label)
            loss.backward()
            optimizer.step()
            losses.append(loss.detach().item())
        row: dict = {"epoch": epoch + 1, "train_loss": float(np.mean(losses)), "learning_rate": lr}
        if (epoch + 1) % int(cfg["val_every"]) == 0 or epoch + 1 == epochs:
            dice = validate(net, val_subjects, plan, config["inference"], device)
            row["val_dice_mean"] = float(np.mean(dice))
            row.update({f"val_dice_{c}": d for c, d in zip(classes, dice, strict=True)})
        row["seconds"] = time.perf_counter() - start
        rows.append(row)
        log.info(
            "epoch %d/%d: %s",
            epoch + 1,
            epochs,
            ", ".join(f"{k}={v:.4g}" for k, v in row.items() if k != "epoch"),
        )
        state = {
            "model_state": net.state_dict(),
            "optimizer_state": optimizer.state_dict(),
            "model_config": dict(config["model"]),
            "plan": dict(plan),
            "epoch": epoch + 1,
            "val_dice_mean": row.get("val_dice_mean"),
        }
        save_checkpoint(out / "last.pt", state)
        score = row.get("val_dice_mean", -math.inf)
        if not math.isnan(score) and score > best:
            best = score
            save_checkpoint(out / "best.pt", state)
        write_tsv(out / "training_log.tsv", rows, columns)
    if not (out / "best.pt").exists():
        save_checkpoint(out / "best.pt", state)
    plot_learning_curve(rows, classes, out / "learning_curve.png")
    return rows[-1]
