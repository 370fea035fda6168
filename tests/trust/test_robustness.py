"""Scoring perturbed copies: Dice per class, the table per perturbation and strength, the plot,
perturbed copies on disk and segmented as one shard."""

from __future__ import annotations

import math

import nibabel as nib
import numpy as np
import pytest
import torch

from cohortseg.networks.build import build_network
from cohortseg.trust.perturbations import DEGRADATIONS
from cohortseg.trust.robustness import (
    degraded_above_clean,
    dice_by_strength,
    dice_per_class,
    perturbed_copies,
    plot_robustness,
    segment_and_score,
)

CLASSES = ["organ", "shell", "tube"]


def test_dice_per_class():
    a = np.zeros((4, 4, 4), np.uint8)
    b = a.copy()
    a[:2], b[:1] = 1, 1
    assert dice_per_class(a, b, 3) == [pytest.approx(2 / 3), 1.0]  # class 2 in neither: 1


def rows():
    out = []
    for source, clean_dice in (("a", 0.9), ("b", 0.8)):
        out.append(
            {
                "source": source,
                "perturbation": "none",
                "strength": 0.0,
                "mean_dice": clean_dice,
                "dice_organ": clean_dice,
                "mean_uncertainty": 0.1,
            }
        )
        for strength in (0.5, 1.0):
            dice = clean_dice - 0.2 * strength
            out.append(
                {
                    "source": source,
                    "perturbation": "noise",
                    "strength": strength,
                    "mean_dice": dice,
                    "dice_organ": dice,
                    "mean_uncertainty": 0.1 + strength,
                }
            )
    return out


def test_the_table_has_every_strength_with_the_clean_copies_at_0_and_the_plot_is_drawn(tmp_path):
    table = dice_by_strength(rows(), ["organ"])
    assert [(r["perturbation"], r["strength"]) for r in table] == [
        ("noise", 0.0),
        ("noise", 0.5),
        ("noise", 1.0),
    ]
    assert [r["mean_dice"] for r in table] == pytest.approx([0.85, 0.75, 0.65])
    assert table[0]["subjects"] == 2
    assert degraded_above_clean(rows()) == 1.0
    plot_robustness(table, "test", tmp_path / "robustness.png")
    assert (tmp_path / "robustness.png").read_bytes()[:4] == b"\x89PNG"


def test_perturbed_copies_are_segmented_and_scored(tmp_path, phantom_files, small_plan):
    torch.manual_seed(0)
    model = {"name": "UNet", "channels": [4, 8, 16], "strides": [2, 2], "num_res_units": 0}
    checkpoint = tmp_path / "model.pt"
    state = build_network(model, 4).state_dict()
    torch.save({"model_state": state, "model_config": model, "plan": small_plan}, checkpoint)
    copies = perturbed_copies(phantom_files[:1], DEGRADATIONS, [1.0], tmp_path / "copies")
    assert [c["perturbation"] for c in copies] == ["none", *DEGRADATIONS]
    source = nib.load(phantom_files[0][1])
    for c in copies:
        assert nib.load(c["image"]).shape == source.shape
    inference = {
        "overlap": 0.25,
        "sw_batch_size": 2,
        "device": "cpu",
        "num_workers": 1,
        "queue_size": 1,
        "tta": "none",
        "uncertainty_maps": False,
    }
    scored, seconds = segment_and_score(str(checkpoint), copies, inference, CLASSES, tmp_path)
    assert seconds > 0 and len(scored) == len(copies)
    for r in scored:
        assert 0 <= r["mean_dice"] <= 1 and set(r) >= {f"dice_{c}" for c in CLASSES}
        assert math.isnan(r["mean_uncertainty"]) or 0 <= r["mean_uncertainty"] <= 1
