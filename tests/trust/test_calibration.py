"""Calibration on the validation split: bins over every voxel, the summary, the diagram."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from cohortseg.core.cohort import Subject
from cohortseg.core.io import save_nifti
from cohortseg.trust.calibration import calibration_bins, calibration_summary, plot_reliability


class Certain(torch.nn.Module):
    """Logits that make class 1 certain wherever the image is positive, class 0 elsewhere."""

    def forward(self, x):
        return torch.cat([-20 * (x > 0).float(), 20 * (x > 0).float() - 10], dim=1)


def test_a_certain_and_right_model_is_perfectly_calibrated(tmp_path):
    image = -np.ones((8, 8, 6), np.float32)
    image[2:5, 2:6, 1:4] = 1.0
    label = (image > 0).astype(np.uint8)
    save_nifti(tmp_path / "image.nii", image, np.eye(4))
    save_nifti(tmp_path / "label.nii.gz", label, np.eye(4))
    subject = Subject("sub-0", str(tmp_path / "image.nii"), str(tmp_path / "label.nii.gz"), "val")
    plan = {"patch_size": [8, 8, 6], "classes": ["organ"]}
    inference = {"sw_batch_size": 1, "overlap": 0.0, "tta": "mirror"}
    bins = calibration_bins(Certain(), plan, [subject], inference, torch.device("cpu"))
    assert bins[:, 0].sum() == image.size  # every voxel, once
    assert bins[-1, 0] == image.size and bins[-1, 2] == image.size  # all confident and right
    summary = calibration_summary(bins, 1)
    assert summary["ece"] == pytest.approx(0.0, abs=1e-4)  # softmax of logits 10 apart
    assert summary["n_voxels"] == image.size and len(summary["bins"]) == 10
    assert math.isnan(summary["bins"][0]["accuracy"])  # an empty bin
    plot_reliability(summary, "test", tmp_path / "calibration.png")
    assert (tmp_path / "calibration.png").read_bytes()[:4] == b"\x89PNG"
