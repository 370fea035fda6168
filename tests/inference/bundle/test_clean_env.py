"""The bundle travels: in a clean MONAI environment (torch, monai, numpy, nibabel, fire and
pytorch-ignite at cohortseg's pins; no cohortseg), ``python -m monai.bundle run`` segments as
cohortseg's inference does, with test-time augmentation and without, and ``train.json`` and
``evaluate.json`` run.

The environment is made once per set of pins (tests/inference/bundle/clean_env.py: about 90 s
on the 2-core machine) and kept under ~/.cache/cohortseg/.
"""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from cohortseg.core.io import load_nifti
from cohortseg.evaluation.metrics import dice_hd95
from tests.inference.bundle.clean_env import clean_environ, clean_venv
from tests.inference.bundle.common import (
    INFERENCE,
    assert_same_segmentation,
    pipeline_segmentations,
)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def python() -> Path:
    venv, _ = clean_venv()
    return venv / "bin" / "python"


def monai_bundle(python: Path, bundle: Path, *args: str) -> str:
    """``python -m monai.bundle run ARGS`` in the bundle's folder of the clean environment;
    returns what it printed."""
    done = subprocess.run(
        [str(python), "-m", "monai.bundle", "run", *args, "--bundle_root", str(bundle)],
        cwd=bundle,
        env=clean_environ(),
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    return done.stdout + done.stderr


def test_the_environment_has_no_cohortseg(python, tmp_path):
    for module in ("cohortseg", "isal", "h5py"):
        done = subprocess.run(
            [str(python), "-c", f"import {module}"],
            cwd=tmp_path,
            env=clean_environ(),
            capture_output=True,
            text=True,
        )
        assert done.returncode != 0 and "No module named" in done.stderr, module


@pytest.mark.parametrize("tta", ["mirror", "none"])
def test_monai_bundle_run_segments_as_the_pipeline(exported, python, tmp_path, tta):
    images = tmp_path / "images"
    images.mkdir()
    for sid, image, _ in exported.phantoms:
        (images / f"{sid}.nii.gz").symlink_to(image)
    args = ["--config_file", "configs/inference.json", "--dataset_dir", str(images)]
    args += ["--output_dir", str(tmp_path / "out")]
    if tta != INFERENCE["tta"]:
        args += ["--inference#tta", tta]
    log = monai_bundle(python, exported.bundle, *args)
    assert "[3/3]" in log
    inference = {**INFERENCE, "tta": tta}
    ours = pipeline_segmentations(
        exported.net, exported.plan, exported.phantoms, tmp_path / "own", inference
    )
    for subject, path in ours.items():
        assert_same_segmentation(tmp_path / "out" / f"{subject}_seg.nii.gz", path)


def datalist(exported, folder: Path) -> Path:
    """Two training subjects and one validation subject in the Decathlon's datalist layout."""
    folder.mkdir()
    entries = []
    for sid, image, label in exported.phantoms:
        (folder / f"{sid}_image.nii.gz").symlink_to(image)
        (folder / f"{sid}_label.nii.gz").symlink_to(label)
        entries.append({"image": f"{sid}_image.nii.gz", "label": f"{sid}_label.nii.gz"})
    (folder / "datalist.json").write_text(
        json.dumps({"training": entries[:2], "validation": entries[2:]})
    )
    return folder


def test_evaluate_scores_as_cohortseg_and_train_fine_tunes(exported, python, tmp_path):
    bundle = Path(shutil.copytree(exported.bundle, tmp_path / "bundle"))
    data = datalist(exported, tmp_path / "data")
    configs = "['configs/train.json','configs/evaluate.json']"
    monai_bundle(python, bundle, "--config_file", configs, "--dataset_dir", str(data))
    with open(bundle / "eval" / "val_mean_dice_raw.csv") as handle:
        (row,) = list(csv.DictReader(handle))
    sid, image, label = exported.phantoms[2]
    ours = pipeline_segmentations(
        exported.net, exported.plan, [(sid, image, label)], tmp_path, INFERENCE
    )
    prediction, affine = load_nifti(ours[sid], dtype=np.uint8)
    reference, _ = load_nifti(label, dtype=np.uint8)
    expected, _ = dice_hd95(prediction, reference, affine, len(exported.plan["classes"]) + 1)
    for c, value in enumerate(expected):
        assert float(row[f"class{c}"]) == pytest.approx(value, abs=1e-5), c

    before = (bundle / "models" / "model.pt").read_bytes()
    log = monai_bundle(
        python, bundle, "--config_file", "configs/train.json", "--dataset_dir", str(data),
        "--max_epochs", "2",
    )  # fmt: skip
    assert "Restored all variables from" in log, "fine-tunes the bundle's model"
    assert "Epoch[2] Complete" in log
    after = (bundle / "models" / "model.pt").read_bytes()
    assert after != before, "the best network by validation Dice is kept"
    state = torch.load(bundle / "models" / "model.pt", weights_only=True)
    assert set(state) == set(exported.net.state_dict())
