"""Fixtures shared by the tests: small synthetic subjects and a small plan."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml
from hypothesis import settings

from cohortseg.core.io import save_nifti
from cohortseg.inputs.demo import demo_phantom
from cohortseg.preprocessing.plan import plan_hash

REPO = Path(__file__).resolve().parents[1]

# No wall-clock deadline per example (hypothesis's default is 200 ms): a loaded CI machine must
# not fail a property test for being slow.
settings.register_profile("cohortseg", deadline=None)
settings.load_profile("cohortseg")


def default_config() -> dict:
    """The repository's ``config.yaml``, freshly loaded: a deep copy that a test may change.

    Tests build complete config sections from it (the code reads every key directly; defaults
    live only in ``config.yaml`` and the schema), e.g.
    ``{**default_config()["training"], "epochs": 2}``.
    """
    return yaml.safe_load((REPO / "config.yaml").read_text())


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


REPORT_CLASSES = ["organ", "shell"]


def report_cohort(n: int = 20, unusual: dict[str, float] | None = None) -> tuple[list, list]:
    """Statistics and metrics rows of a synthetic cohort of ``n`` test subjects with classes
    :data:`REPORT_CLASSES` (volumes flagged like the workflow; ``unusual``: id → organ mL)."""
    from cohortseg.evaluation.stats import flag_outliers

    rng = np.random.default_rng(1)
    stats, metrics = [], []
    for k in range(n):
        s = f"sub-{k:03d}"
        vol = (unusual or {}).get(s, 100 + rng.normal(0, 5))
        stats.append(
            {
                "subject": s,
                "split": "test",
                "status": "ok",
                "volume_ml_organ": vol,
                "volume_ml_shell": 20 + rng.normal(0, 1),
            }
        )
        metrics.append(
            {"subject": s, "split": "test", "dice_organ": 0.9 - 0.01 * (k % 7), "dice_shell": 0.85}
        )
    return flag_outliers(stats, REPORT_CLASSES, 3.5), metrics
