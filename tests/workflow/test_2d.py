"""2D images through the whole volume pipeline: the 2D demo (``demo.dims: 2``, single-slice
NIfTI) from validation to the report, through the real snakemake CLI, kept small (4 subjects of
64 × 64 pixels, a few training steps, the report's extras on one or two subjects)."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest

from cohortseg.io import read_tsv
from tests.workflow.conftest import snakemake

pytestmark = pytest.mark.slow

SPLITS = {"train": 2, "val": 1, "test": 1, "infer": 0}
SMALL_2D = [
    f"demo={{dims: 2, shape: [64, 64, 16], subjects_per_split: {json.dumps(SPLITS)}}}",
    "training={epochs: 2, steps_per_epoch: 3}",
    "shard_size=8",  # one job per sharded stage
    "patches={per_subject: 6}",
    "report={robustness_subjects: 1, robustness_strengths: [1.0], qc_sample: 1, qc_worst: 1,"
    " qc_unusual: 0}",
]


def test_the_2d_demo_runs_in_plane_and_keeps_every_slices_grid(tmp_path):
    snakemake(tmp_path, "--cores", "2", "--config", *SMALL_2D)

    plan = json.loads((tmp_path / "results" / "plan" / "plan.json").read_text())
    assert plan["spatial_dims"] == 2 and plan["patch_size"][2] == 1
    rows = read_tsv(tmp_path / "results" / "metrics.tsv")
    assert len(rows) == sum(SPLITS.values())
    for row in rows:
        subject = row["subject"]
        image = nib.load(tmp_path / "resources" / "demo" / "images" / f"{subject}.nii.gz")
        seg = nib.load(tmp_path / "results" / "segmentations" / f"{subject}.nii.gz")
        assert image.shape == seg.shape == (64, 64, 1), subject
        np.testing.assert_allclose(seg.affine, image.affine, atol=1e-5, err_msg=subject)
        dice = float(row["dice_organ"])  # every demo subject is labelled
        assert 0.0 <= dice <= 1.0, subject
    montages = sorted((tmp_path / "results" / "qc" / "montages").glob("*.png"))
    assert montages and (tmp_path / "results" / "report").is_dir()
