"""What the bundle's tests share: a small trained-looking checkpoint, its bundle, the pipeline's
own segmentations to compare with, and Dice."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import torch

from cohortseg.core.io import load_nifti
from cohortseg.inference.bundle.portable import MODULE_NAME
from cohortseg.inference.shard import ShardItem, segment_items
from cohortseg.networks.build import build_network
from tests.conftest import default_config

MODEL = {"name": "UNet", "channels": [4, 8, 16], "strides": [2, 2], "num_res_units": 0}

#: The pipeline's inference settings the bundles are exported with (test-time augmentation on:
#: what the bundle must reproduce; ``--inference#tta none`` turns it off).
INFERENCE = {**default_config()["inference"], "overlap": 0.25, "tta": "mirror", "device": "cpu"}


def make_checkpoint(path: Path, plan: dict) -> torch.nn.Module:
    """A cohortseg checkpoint of an untrained network, whose class scores still vary with the
    image so that the label maps hold several classes."""
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


def pipeline_segmentations(
    net: torch.nn.Module, plan: dict, phantoms, out: Path, inference: dict
) -> dict[str, Path]:
    """Subject → the label map cohortseg's inference shard job writes for it."""
    items = [ShardItem(s, image, str(out / f"{s}.nii.gz")) for s, image, _ in phantoms]
    assert segment_items(net, plan, items, inference, torch.device("cpu")) == []
    return {item.subject: Path(item.output) for item in items}


def assert_same_segmentation(theirs: Path, ours: Path, min_dice: float = 0.99) -> float:
    """Check that two label maps lie on the same grid and agree (Dice); returns the Dice."""
    mine, my_affine = load_nifti(ours, dtype=np.uint8)
    other, affine = load_nifti(theirs, dtype=np.uint8)
    assert other.shape == mine.shape
    np.testing.assert_allclose(affine, my_affine, atol=1e-6)
    assert len(np.unique(mine)) > 1, "the untrained network should predict several classes"
    score = dice(other, mine)
    assert score >= min_dice, (theirs, score)
    return score


def load_portable(bundle: Path) -> ModuleType:
    """A bundle's ``scripts/cohortseg_portable.py``, imported from its file under a name of its
    own (so that it cannot pick up cohortseg)."""
    path = bundle / "scripts" / f"{MODULE_NAME}.py"
    spec = importlib.util.spec_from_file_location(f"portable_{abs(hash(path))}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while it runs
    spec.loader.exec_module(module)
    return module
