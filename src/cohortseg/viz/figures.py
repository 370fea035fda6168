"""Figures saved to files: the learning curve and per-version Dice, through one saver."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence

import matplotlib

from cohortseg.core.io import parse_number

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from cohortseg.core.io import atomic_write  # noqa: E402


def plot_learning_curve(
    rows: Sequence[Mapping], classes: Sequence[str], path: str | os.PathLike[str]
) -> None:
    """Training loss and validation Dice per class against the epoch (federated training: the
    round), as a PNG; with per-site columns (``val_dice_mean@{site}``) also each site's and the
    global mean Dice, dashed."""
    fig, (ax_loss, ax_dice) = plt.subplots(1, 2, figsize=(10, 4))
    epochs = [r["epoch"] for r in rows]
    ax_loss.plot(epochs, [r["train_loss"] for r in rows], marker="o")
    ax_loss.set(xlabel="epoch", ylabel="training loss (Dice + CE)", title="Training loss")
    for c in classes:
        pts = [(r["epoch"], r[f"val_dice_{c}"]) for r in rows if f"val_dice_{c}" in r]
        if pts:
            ax_dice.plot(*zip(*pts, strict=True), marker="o", label=c)
    sites = sorted({k for r in rows for k in r if k.startswith("val_dice_mean@")})
    for key in ["val_dice_mean"] + sites if sites else []:
        pts = [(r["epoch"], r[key]) for r in rows if key in r]
        label = f"mean @ {key.split('@')[1]}" if "@" in key else "mean, global"
        if pts:
            ax_dice.plot(*zip(*pts, strict=True), linestyle="--", marker=".", label=label)
    ax_dice.set(xlabel="epoch", ylabel="Dice", title="Validation Dice", ylim=(0, 1))
    ax_dice.legend()
    fig.tight_layout()
    save_figure(fig, path)


def plot_version_dice(
    rows: Sequence[Mapping], classes: Sequence[str], path: str | os.PathLike[str]
) -> None:
    """Mean Dice per class on the val and test splits of every model version (the rows of
    ``results/models/versions.tsv``), as grouped bars in a PNG; versions never evaluated on a
    split have no bar there."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    width = 0.8 / max(len(rows), 1)
    for ax, split in zip(axes, ("val", "test"), strict=True):
        for k, r in enumerate(rows):
            dice = [parse_number(r.get(f"{split}_dice_{c}"), math.nan) for c in classes]
            ax.bar(np.arange(len(classes)) + k * width, dice, width, label=r["version"])
        ax.set(title=f"{split} split", ylim=(0, 1), ylabel="mean Dice")
        ax.set_xticks(np.arange(len(classes)) + width * (len(rows) - 1) / 2, classes)
    axes[0].legend(title="model version")
    fig.tight_layout()
    save_figure(fig, path)


def save_figure(fig: plt.Figure, path: str | os.PathLike[str], dpi: int = 100) -> None:
    """Write ``fig`` as a PNG at ``path`` (atomically, ``dpi`` dots per inch) and close it."""
    with atomic_write(path) as tmp:
        fig.savefig(tmp, dpi=dpi, format="png", facecolor=fig.get_facecolor())
    plt.close(fig)
