"""Figures and tables for people: the learning curve, the metrics table and the summary."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from cohortseg.io import atomic_write  # noqa: E402

log = logging.getLogger(__name__)


def plot_learning_curve(
    rows: Sequence[Mapping], classes: Sequence[str], path: str | os.PathLike[str]
) -> None:
    """Training loss and validation Dice per class against the epoch, as a PNG."""
    fig, (ax_loss, ax_dice) = plt.subplots(1, 2, figsize=(10, 4))
    epochs = [r["epoch"] for r in rows]
    ax_loss.plot(epochs, [r["train_loss"] for r in rows], marker="o")
    ax_loss.set(xlabel="epoch", ylabel="training loss (Dice + CE)", title="Training loss")
    for c in classes:
        pts = [(r["epoch"], r[f"val_dice_{c}"]) for r in rows if f"val_dice_{c}" in r]
        if pts:
            ax_dice.plot(*zip(*pts, strict=True), marker="o", label=c)
    ax_dice.set(xlabel="epoch", ylabel="Dice", title="Validation Dice", ylim=(0, 1))
    ax_dice.legend()
    fig.tight_layout()
    with atomic_write(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
