"""How much to trust a segmentation: voxel-wise predictive entropy of the class probabilities,
per-subject uncertainty scores per class (entropy inside the predicted structure and its boundary
band; disagreement between test-time-augmentation members), and calibration (reliability bins,
expected calibration error)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

# Voxels around a predicted structure that belong to its boundary band (on the grid the
# probabilities are on): the uncertain voxels of a structure lie on its surface, often just
# outside the predicted region.
BAND_VOXELS = 1


# Confidence bins of the reliability diagram: [0, 0.1), …, [0.9, 1.0].
CALIBRATION_BINS = 10


def predictive_entropy(probabilities: torch.Tensor) -> torch.Tensor:
    """Voxel-wise entropy of (C, X, Y, Z) class probabilities, normalised by log C to [0, 1]
    (0: one class certain; 1: all classes equally likely). Returns (X, Y, Z) float32."""
    p = probabilities.float()
    entropy = -(p * torch.log(p.clamp_min(1e-12))).sum(dim=0)
    return (entropy / math.log(probabilities.shape[0])).clamp_(0.0, 1.0)


def structure_band(
    labels: torch.Tensor, value: int, band_voxels: int = BAND_VOXELS
) -> torch.Tensor:
    """(X, Y, Z) bool mask of the voxels of class ``value`` in ``labels`` and those within
    ``band_voxels`` voxels of them (chessboard distance)."""
    mask = (labels == value).float()[None, None]
    if band_voxels > 0:
        k = 2 * band_voxels + 1
        mask = F.max_pool3d(mask, kernel_size=k, stride=1, padding=band_voxels)
    return mask[0, 0] > 0


def structure_uncertainty(
    entropy: torch.Tensor, labels: torch.Tensor, n_classes: int, band_voxels: int = BAND_VOXELS
) -> list[float]:
    """Mean normalised entropy (:func:`predictive_entropy`, (X, Y, Z)) inside each foreground
    class's predicted structure and its boundary band (:func:`structure_band`) of the (X, Y, Z)
    ``labels``; one value per class 1 … ``n_classes`` - 1, NaN for a class not predicted."""
    out = []
    for value in range(1, n_classes):
        mask = structure_band(labels, value, band_voxels)
        n = int(mask.sum())
        out.append(float(entropy[mask].double().sum() / n) if n else math.nan)
    return out


def member_disagreement(
    member_labels: Sequence[torch.Tensor], labels: torch.Tensor, n_classes: int
) -> list[float]:
    """1 − the mean Dice between each test-time-augmentation member's (X, Y, Z) label map and
    the (X, Y, Z) ``labels`` of their averaged probabilities, per class 1 … ``n_classes`` - 1
    (0: the members agree; NaN for a class that neither the members nor the average predict)."""
    out = []
    for value in range(1, n_classes):
        consensus = labels == value
        dices = []
        for member in member_labels:
            m = member == value
            total = int(m.sum()) + int(consensus.sum())
            if total:
                dices.append(2.0 * int((m & consensus).sum()) / total)
        out.append(1.0 - float(np.mean(dices)) if dices else math.nan)
    return out


def reliability_bins(
    probabilities: torch.Tensor, labels: torch.Tensor, n_bins: int = CALIBRATION_BINS
) -> np.ndarray:
    """Counts for a reliability diagram of (C, X, Y, Z) probabilities against (X, Y, Z) true
    labels: per confidence bin (the top class's probability, ``n_bins`` equal bins of [0, 1]) the
    number of voxels, the sum of their confidences and the number whose top class is right.

    Returns (n_bins, 3) float64; bins of several subjects add up.
    """
    confidence, predicted = probabilities.float().max(dim=0)
    correct = (predicted == labels.to(predicted.device).long()).double().flatten()
    confidence = confidence.double().flatten()
    index = (confidence * n_bins).long().clamp_(0, n_bins - 1)
    out = torch.zeros((n_bins, 3), dtype=torch.float64, device=confidence.device)
    out[:, 0].index_add_(0, index, torch.ones_like(confidence))
    out[:, 1].index_add_(0, index, confidence)
    out[:, 2].index_add_(0, index, correct)
    return out.cpu().numpy()


def expected_calibration_error(bins: np.ndarray) -> float:
    """Expected calibration error of :func:`reliability_bins` counts: Σ_b (n_b / N) ×
    |accuracy_b − mean confidence_b| (0: perfectly calibrated; NaN without voxels)."""
    bins = np.asarray(bins, dtype=np.float64)
    n = bins[:, 0]
    if n.sum() == 0:
        return math.nan
    used = n > 0
    gap = np.abs(bins[used, 2] - bins[used, 1]) / n[used]
    return float((n[used] * gap).sum() / n.sum())


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman's rank correlation of two equally long sequences (ties share their mean rank);
    NaN when either is constant or there are fewer than 2 pairs."""
    from scipy.stats import spearmanr

    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if x.size < 2 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return math.nan
    return float(spearmanr(x, y).statistic)


# Per-subject uncertainty scores per class, from the inference job
# (cohortseg.inference.uncertainty): the mean normalised predictive entropy inside the predicted
# structure and its boundary band, and 1 - the mean Dice between the test-time-augmentation members
# and their average.
UNCERTAINTY = ("uncertainty", "tta_disagreement")


def uncertainty_columns(classes: Sequence[str]) -> list[str]:
    """The per-class uncertainty columns that inference writes (:data:`UNCERTAINTY`):
    ``uncertainty_{class}`` and ``tta_disagreement_{class}`` (empty without TTA)."""
    return [f"{q}_{c}" for q in UNCERTAINTY for c in classes]
