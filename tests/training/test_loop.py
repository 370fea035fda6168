"""Training on patch stores: deterministic on CPU, with checkpoints, log and learning curve."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from cohortseg.core.cohort import Subject
from cohortseg.core.errors import CohortsegError
from cohortseg.core.geometry import spacing_of
from cohortseg.core.io import load_nifti, read_tsv, save_nifti
from cohortseg.networks.build import build_network
from cohortseg.preprocessing.patches import write_store
from cohortseg.preprocessing.prepare import prepare_image, prepare_label
from cohortseg.training.checkpoints import weights_digest
from cohortseg.training.loop import checkpoint_activations, scaled_learning_rate, train
from tests.conftest import default_config

CONFIG = {
    "model": {"name": "UNet", "channels": [4, 8, 16], "strides": [2, 2], "num_res_units": 0},
    "training": {
        **default_config()["training"],
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


def make_inputs(tmp: Path, phantom_files, plan) -> tuple[list[str], list[Subject]]:
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
        val.append(Subject(sid, str(tmp / f"{sid}_pi.nii"), str(tmp / f"{sid}_pl.nii.gz"), "val"))
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
    state = torch.load(tmp_path / "a" / "last.pt", weights_only=False)
    assert state["finished"] and state["epoch"] == 2 and state["step"] == 0
    assert state["rank_weight_digests"] == [weights_digest(a)]
    assert (state["task"], state["spatial_dims"], state["in_channels"]) == ("volume", 3, 1)
    assert state["resume_key"]["task"] == "volume"


def test_rerun_resumes_its_own_checkpoint_and_not_another_runs(
    tmp_path, phantom_files, small_plan, caplog
):
    stores, val = make_inputs(tmp_path, phantom_files, small_plan)
    out = tmp_path / "run"
    train(CONFIG, small_plan, stores, val, out)
    first = torch.load(out / "last.pt", weights_only=False)["model_state"]

    caplog.set_level(logging.INFO, logger="cohortseg")
    caplog.clear()
    train(CONFIG, small_plan, stores, val, out)  # finished: resumes at the end, trains nothing
    assert "resumed from" in caplog.text
    assert "epoch 1/2" not in caplog.text and "epoch 2/2" not in caplog.text
    again = torch.load(out / "last.pt", weights_only=False)["model_state"]
    assert all(torch.equal(first[k], again[k]) for k in first)
    assert [r["epoch"] for r in read_tsv(out / "training_log.tsv")] == ["1", "2"]

    caplog.clear()
    other = {**CONFIG, "training": {**CONFIG["training"], "seed": 8}}
    train(other, small_plan, stores, val, out)
    assert "written for another run (training.seed (7 then, 8 now))" in caplog.text
    assert "epoch 2/2" in caplog.text


def test_activation_checkpointing_keeps_parameter_names_and_gradients():
    model = {"name": "UNet", "channels": [4, 8, 16], "strides": [2, 2], "num_res_units": 1}
    torch.manual_seed(0)
    plain = build_network(model, 3)
    ckpt = build_network(model, 3)
    ckpt.load_state_dict(plain.state_dict())
    assert checkpoint_activations(ckpt) > 0
    assert list(ckpt.state_dict()) == list(plain.state_dict())
    x = torch.randn(2, 1, 16, 16, 16)
    for net in (plain, ckpt):
        net(x).square().mean().backward()
    for (name, p), q in zip(plain.named_parameters(), ckpt.parameters(), strict=True):
        torch.testing.assert_close(p.grad, q.grad, msg=name)
    with torch.no_grad():
        torch.testing.assert_close(plain(x), ckpt(x))


def test_learning_rate_scales_linearly_with_the_ranks_on_request():
    assert scaled_learning_rate(0.01, "none", 8) == 0.01
    assert scaled_learning_rate(0.01, "linear", 8) == pytest.approx(0.08)
    with pytest.raises(CohortsegError, match="lr_scaling"):
        scaled_learning_rate(0.01, "sqrt", 8)


def test_fine_tuning_starts_from_the_parent_with_its_own_epochs(
    tmp_path, phantom_files, small_plan
):
    """training.init_from: the parent's network and weights, fine_tuning's epochs and rate."""
    stores, val = make_inputs(tmp_path, phantom_files, small_plan)
    train(CONFIG, small_plan, stores, val, tmp_path / "parent")
    parent = tmp_path / "parent" / "best.pt"
    # another network in the config: the parent's is the one fine-tuned
    config = {
        **CONFIG,
        "model": {**CONFIG["model"], "channels": [2, 4, 8]},
        "training": {**CONFIG["training"], "fine_tuning": {"epochs": 1, "learning_rate": 1e-9}},
    }
    train(config, small_plan, stores, val, tmp_path / "child", init_from=parent)
    child = torch.load(tmp_path / "child" / "best.pt", weights_only=False)
    before = torch.load(parent, weights_only=False)
    assert child["model_config"] == before["model_config"]
    assert len(read_tsv(tmp_path / "child" / "training_log.tsv")) == 1
    assert child["lr_schedule"]["base_lr"] == 1e-9
    for name, w in before["model_state"].items():  # a learning rate of 1e-9 barely moves them
        torch.testing.assert_close(child["model_state"][name], w, atol=1e-6, rtol=0)
    other_plan = {**small_plan, "hash": "another"}
    with pytest.raises(CohortsegError, match="keeps the parent's plan"):
        train(config, other_plan, stores, val, tmp_path / "x", init_from=parent)


def test_auto_network_trains_with_deep_supervision_and_sgd_and_segments_plainly(
    tmp_path, phantom_files, small_plan
):
    """model.name auto: the plan's DynUNet (narrowed by kwargs for speed), its deep-supervision
    heads in the loss, SGD; the checkpoint rebuilds it and inference gets one output."""
    from cohortseg.inference.predictor import predict_probabilities
    from cohortseg.networks.build import load_model
    from cohortseg.networks.topology import auto_network
    from cohortseg.preprocessing.plan import plan_hash

    network = auto_network(small_plan["target_spacing_mm"], small_plan["patch_size"])
    plan = {**small_plan, "patch_size": network.pop("patch_size"), "network": network}
    plan["hash"] = plan_hash(plan)
    stores, val = make_inputs(tmp_path, phantom_files, plan)
    config = {
        **CONFIG,
        "model": {"name": "auto", "kwargs": {"filters": [4, 8, 16]}},
        "training": {**CONFIG["training"], "optimizer": "sgd", "epochs": 1},
    }

    row = train(config, plan, stores, val, tmp_path / "auto")

    assert network["deep_supr_num"] == 1  # 24³ at 2 mm: 3 stages, one head besides the output
    assert np.isfinite(row["train_loss"]) and 0 <= row["val_dice_mean"] <= 1
    state = torch.load(tmp_path / "auto" / "best.pt", weights_only=False)
    assert state["model_config"]["name"] == "DynUNet"
    assert state["model_config"]["kwargs"]["strides"] == network["strides"]
    assert state["optimizer_state"]["param_groups"][0]["nesterov"] is True
    net, _ = load_model(str(tmp_path / "auto" / "best.pt"), torch.device("cpu"))
    image, _ = load_nifti(val[0].image)
    probs = predict_probabilities(net, torch.as_tensor(image)[None], plan, CONFIG["inference"])
    assert probs.shape == (4, *image.shape)
    torch.testing.assert_close(probs.sum(0), torch.ones(image.shape))  # softmax: sums to 1
