"""How well the model's class probabilities are calibrated, on the validation split: reliability
bins of every voxel of the preprocessed validation subjects (segmented the way inference does,
test-time augmentation included), the expected calibration error and the reliability diagram."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from cohortseg.core.cohort import Subject  # noqa: E402
from cohortseg.core.io import load_nifti  # noqa: E402
from cohortseg.inference.predictor import predict_with_tta  # noqa: E402
from cohortseg.inference.uncertainty import (
    CALIBRATION_BINS,
    expected_calibration_error,
    reliability_bins,
)
from cohortseg.viz.figures import save_figure  # noqa: E402

log = logging.getLogger(__name__)


def calibration_bins(
    net: torch.nn.Module,
    plan: Mapping,
    subjects: Sequence[Subject],
    inference: Mapping,
    device: torch.device,
    n_bins: int = CALIBRATION_BINS,
) -> np.ndarray:
    """Reliability bins (:func:`cohortseg.inference.uncertainty.reliability_bins`, (n_bins, 3))
    summed over every voxel of the preprocessed ``subjects`` (image and label on the plan's grid,
    the body crop), each segmented with :func:`cohortseg.inference.predictor.predict_with_tta`."""
    total = np.zeros((n_bins, 3))
    net.eval()
    for s in subjects:
        image, _ = load_nifti(s.image, s.subject)
        label, _ = load_nifti(s.label, s.subject, dtype=np.uint8)
        tensor = torch.as_tensor(image, device=device)[None]
        probs, _ = predict_with_tta(net, tensor, plan, inference)
        total += reliability_bins(probs, torch.as_tensor(label), n_bins)
        log.info("%s: calibration bins added", s.subject)
    return total


def calibration_summary(bins: np.ndarray, n_subjects: int) -> dict:
    """JSON-ready summary: ``ece``, ``n_subjects``, ``n_voxels`` and per bin its range,
    voxels, mean confidence and accuracy (NaN where empty)."""
    bins = np.asarray(bins, dtype=np.float64)
    n = len(bins)
    rows = []
    for k, (count, confidence, correct) in enumerate(bins):
        rows.append(
            {
                "bin": [k / n, (k + 1) / n],
                "voxels": int(count),
                "confidence": float(confidence / count) if count else float("nan"),
                "accuracy": float(correct / count) if count else float("nan"),
            }
        )
    return {
        "ece": expected_calibration_error(bins),
        "n_subjects": int(n_subjects),
        "n_voxels": int(bins[:, 0].sum()),
        "bins": rows,
    }


def plot_reliability(summary: Mapping, title: str, path: str | os.PathLike[str]) -> None:
    """Reliability diagram (accuracy against mean confidence per bin, the diagonal being
    perfect calibration) above the share of voxels per bin (log scale), as a PNG."""
    fig, (ax, ax_n) = plt.subplots(
        2, 1, figsize=(5, 6), gridspec_kw={"height_ratios": [3, 1]}, sharex=True
    )
    bins = summary["bins"]
    centres = [(b["bin"][0] + b["bin"][1]) / 2 for b in bins]
    width = bins[0]["bin"][1] - bins[0]["bin"][0] if bins else 0.1
    accuracy = [b["accuracy"] for b in bins]
    ax.bar(centres, accuracy, width=width * 0.9, color="tab:blue", label="accuracy")
    ax.plot([0, 1], [0, 1], "k--", lw=1, label="perfect calibration")
    ax.plot(
        [b["confidence"] for b in bins], accuracy, "o", color="tab:orange", label="mean confidence"
    )
    ax.set(ylabel="accuracy of the top class", xlim=(0, 1), ylim=(0, 1))
    ax.set_title(f"{title}\nECE = {summary['ece']:.4f} ({summary['n_subjects']} subjects)")
    ax.legend(fontsize=8, loc="upper left")
    total = max(1, summary["n_voxels"])
    ax_n.bar(centres, [max(b["voxels"], 0) / total for b in bins], width=width * 0.9)
    ax_n.set(xlabel="confidence (probability of the top class)", ylabel="voxels", yscale="log")
    fig.tight_layout()
    save_figure(fig, path)
