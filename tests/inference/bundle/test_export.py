"""MONAI bundle export: the files the specification asks for, and `monai.bundle run` on a NIfTI
folder segments exactly as cohortseg does."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

from cohortseg.core.io import load_nifti
from cohortseg.inference.bundle import export_bundle
from cohortseg.inference.shard import ShardItem, segment_items
from cohortseg.networks.build import build_network
from tests.conftest import default_config

REPO = Path(__file__).resolve().parents[2]
MODEL = {"name": "UNet", "channels": [4, 8, 16], "strides": [2, 2], "num_res_units": 0}
MANDATORY = (
    "version",
    "monai_version",
    "pytorch_version",
    "numpy_version",
    "optional_packages_version",
    "task",
    "description",
    "authors",
    "copyright",
    "network_data_format",
)


def make_checkpoint(path: Path, plan: dict) -> torch.nn.Module:
    """A cohortseg checkpoint of an untrained network, its class scores skewed per voxel by
    the image (a bias on class 1) so that the label maps hold several classes."""
    torch.manual_seed(0)
    net = build_network(MODEL, len(plan["classes"]) + 1)
    torch.save({"model_state": net.state_dict(), "model_config": MODEL, "plan": plan}, path)
    return net.eval()


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Mean Dice over the label values present in either map (background included)."""
    values = np.union1d(np.unique(a), np.unique(b))
    return float(
        np.mean(
            [2 * np.sum((a == v) & (b == v)) / (np.sum(a == v) + np.sum(b == v)) for v in values]
        )
    )


def test_bundle_files_and_run_reproduce_cohortseg(tmp_path, phantom_files, small_plan):
    net = make_checkpoint(tmp_path / "best.pt", small_plan)
    inference = {**default_config()["inference"], "overlap": 0.25}
    bundle = export_bundle(tmp_path / "best.pt", tmp_path / "bundle", inference, version="1.0.0")
    for name in (
        "configs/metadata.json",
        "configs/inference.json",
        "models/model.pt",
        "docs/README.md",
    ):
        assert (bundle / name).stat().st_size > 0, name
    metadata = json.loads((bundle / "configs" / "metadata.json").read_text())
    assert set(MANDATORY) <= set(metadata)
    assert metadata["network_data_format"]["outputs"]["pred"]["channel_def"]["1"] == "organ"

    images = tmp_path / "images"
    images.mkdir()
    for sid, image, _ in phantom_files:
        (images / f"{sid}.nii.gz").symlink_to(image)
    env = {
        **os.environ,
        "PYTHONPATH": f"{REPO / 'src'}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
    }
    proc = subprocess.run(
        [sys.executable, "-m", "monai.bundle", "run", "--config_file", "configs/inference.json",
         "--bundle_root", str(bundle), "--dataset_dir", str(images),
         "--output_dir", str(tmp_path / "bundle_out")],
        cwd=bundle, env=env, capture_output=True, text=True,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]

    items = [
        ShardItem(sid, image, str(tmp_path / "own" / f"{sid}.nii.gz"))
        for sid, image, _ in phantom_files
    ]
    assert segment_items(net, small_plan, items, inference, torch.device("cpu")) == []
    for item in items:
        own, own_affine = load_nifti(item.output, dtype=np.uint8)
        theirs, affine = load_nifti(
            tmp_path / "bundle_out" / f"{item.subject}_seg.nii.gz", dtype=np.uint8
        )
        np.testing.assert_allclose(affine, own_affine, atol=1e-6)
        assert len(np.unique(own)) > 1, "the untrained network should predict several classes"
        assert dice(theirs, own) >= 0.99, item.subject
