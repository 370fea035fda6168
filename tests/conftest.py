"""Fixtures shared by the tests: small synthetic subjects and a small plan."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cohortseg.cohort import demo_phantom
from cohortseg.io import save_nifti
from cohortseg.plan import plan_hash

REPO = Path(__file__).resolve().parents[1]


def make_small_plan() -> dict:
    """A plan for 2 mm isotropic volumes of about 32³ voxels and a 3-level network."""
    plan = {
        "target_spacing_mm": [2.0, 2.0, 2.0],
        "patch_size": [24, 24, 24],
        "normalization": "zscore",
        "crop": True,
        "crop_margin": 2,
        "intensity": {
            "mean": 500.0,
            "std": 300.0,
            "percentile_00_5": 50.0,
            "percentile_50_0": 600.0,
            "percentile_99_5": 1100.0,
        },
        "classes": ["organ", "shell", "tube"],
    }
    plan["hash"] = plan_hash(plan)
    return plan


def write_phantoms(directory: Path) -> list[tuple[str, str, str]]:
    """Three small demo subjects written to ``directory``: (subject, image path, label path)."""
    out = []
    for k in range(3):
        image, label, affine = demo_phantom([32, 30, 20], [2.0, 2.0, 3.0], seed=100 + k)
        sid = f"sub-{k:02d}"
        ipath, lpath = directory / f"{sid}_image.nii.gz", directory / f"{sid}_label.nii.gz"
        save_nifti(ipath, image, affine)
        save_nifti(lpath, label, affine)
        out.append((sid, str(ipath), str(lpath)))
    return out


@pytest.fixture
def small_plan() -> dict:
    """A plan for 2 mm isotropic volumes of about 32³ voxels and a 3-level network."""
    return make_small_plan()


@pytest.fixture
def phantom_files(tmp_path: Path) -> list[tuple[str, str, str]]:
    """Three small demo subjects on disk: (subject, image path, label path)."""
    return write_phantoms(tmp_path)


def dice(a: np.ndarray, b: np.ndarray, c: int) -> float:
    """Dice of class ``c`` between two label maps."""
    x, y = a == c, b == c
    return 2 * float((x & y).sum()) / max(1, int(x.sum() + y.sum()))
