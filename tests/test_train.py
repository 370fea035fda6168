"""Training on patch stores: deterministic on CPU, with checkpoints, log and learning curve."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from cohortseg.io import load_nifti, read_tsv, save_nifti
from cohortseg.patches import write_store
from cohortseg.preprocess import prepare_image, prepare_label, spacing_of
from cohortseg.train import ValidationSubject, train

CONFIG = {
    "model": {"name": "UNet", "channels": [4, 8, 16], "strides": [2, 2], "num_res_units": 0},
    "training": {
        "epochs": 2,
        "steps_per_epoch": 2,
        "batch_size": 2,
        "learning_rate": 0.01,
        "weight_decay": 0.0,
        "seed": 7,
        "num_workers": 0,
        "val_every": 1,
        "device": "cpu",
    },
    "inference": {"overlap": 0.25, "sw_batch_size": 2},
}


def make_inputs(tmp: Path, phantom_files, plan) -> tuple[list[str], list[ValidationSubject]]:
    stores, val = [], []
    for sid, ipath, lpath in phantom_files:
        image, affine = load_nifti(ipath)
        label, _ = load_nifti(lpath, dtype=np.uint8)
        tensor, geometry = prepare_image(image, affine, plan)
        grid_label = prepare_label(label, geometry)[0].numpy()
        grid_affine = np.array(geometry.affine)
        store = tmp / f"{sid}.h5"
        write_store(
            store,
            sid,
            tensor[0].numpy(),
            grid_label,
            grid_affine,
            spacing_of(grid_affine).tolist(),
            plan,
            n_patches=4,
            foreground_fraction=0.5,
            compression="lzf",
            compression_level=0,
            seed=1,
        )
        stores.append(str(store))
        save_nifti(tmp / f"{sid}_pi.nii", tensor[0].numpy(), grid_affine)
        save_nifti(tmp / f"{sid}_pl.nii.gz", grid_label, grid_affine)
        val.append(
            ValidationSubject(sid, str(tmp / f"{sid}_pi.nii"), str(tmp / f"{sid}_pl.nii.gz"))
        )
    return stores, val[:1]


def test_training_writes_outputs_and_is_deterministic(tmp_path, phantom_files, small_plan):
    stores, val = make_inputs(tmp_path, phantom_files, small_plan)
    row_a = train(CONFIG, small_plan, stores, val, tmp_path / "a")
    train(CONFIG, small_plan, stores, val, tmp_path / "b")
    for name in ("best.pt", "last.pt", "training_log.tsv", "learning_curve.png"):
        assert (tmp_path / "a" / name).stat().st_size > 0
    log = read_tsv(tmp_path / "a" / "training_log.tsv")
    assert [r["epoch"] for r in log] == ["1", "2"]
    assert all(0.0 <= float(r["val_dice_mean"]) <= 1.0 for r in log)
    assert np.isfinite(row_a["train_loss"])
    a = torch.load(tmp_path / "a" / "last.pt", weights_only=False)["model_state"]
    b = torch.load(tmp_path / "b" / "last.pt", weights_only=False)["model_state"]
    init = torch.load(tmp_path / "a" / "best.pt", weights_only=False)
    assert init["plan"]["hash"] == small_plan["hash"]
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert (tmp_path / "a" / "learning_curve.png").read_bytes()[:4] == b"\x89PNG"
