"""Slides train through the one trainer: RGB patches normalised on the device, augmentation
drawn per patch from its seed, validation Dice of the val slides segmented tile by tile, best
and last checkpoints; scripts/wsi_train.py killed (SIGKILL) or stopped (SIGTERM, exit 75)
mid-run and run again resumes, to the weights of a run that never stopped."""

from __future__ import annotations

import json
import math
import re
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from cohortseg.core.cohort import Subject
from cohortseg.core.errors import CohortsegError
from cohortseg.core.io import read_tsv, write_tsv
from cohortseg.training.checkpoints import EXIT_INTERRUPTED
from cohortseg.wsi.demo import synthetic_slide, write_synthetic_slide
from cohortseg.wsi.stages import prepare_slide, slide_patches, write_shard_table
from cohortseg.wsi.training import (
    SlideValidation,
    augment_rgb,
    augment_rgb_sample,
    load_slide_model,
    slide_input,
    slide_predictor,
    slide_training_plan,
    train_slide_model,
    validation_slides,
)
from tests.conftest import REPO, default_config
from tests.training.test_distributed import clean_env, load

H, W, PX = 512, 768, 0.5  # level-0 pixels and µm per pixel: level 1 (1 µm) is 256 × 384
STEPS = 3 * 6  # epochs × steps_per_epoch
CHECKPOINT_LINE = re.compile(r"checkpoint \S+: epoch \d+, step \d+ of \d+ \(global step (\d+)\)")


def wsi_config(sheet: Path) -> dict:
    wsi = default_config()["wsi"]
    return {
        **wsi,
        "slides": str(sheet),
        "target_pixel_size_um": 1.0,
        "patch_size": 64,
        "patches_per_slide": 16,
        "tissue_max_side_px": 256,
        "model": {**wsi["model"], "channels": [8, 16, 32]},
        "training": {
            **wsi["training"],
            "epochs": 3,
            "steps_per_epoch": 6,
            "batch_size": 4,
            "checkpoint_every": 2,
            "device": "cpu",
        },
        "inference": {**wsi["inference"], "device": "cpu"},
    }


@pytest.fixture(scope="module")
def slide_run(tmp_path_factory) -> dict:
    """Two training slides (mask TIFF and GeoJSON labels) and a validation slide, through the
    tissue and patch stages into ``results/wsi`` of a working directory, with their tables."""
    work = tmp_path_factory.mktemp("slides")
    data = work / "data"
    data.mkdir()
    rows = []
    for k, (name, split) in enumerate([("wsi-a", "train"), ("wsi-b", "train"), ("wsi-v", "val")]):
        image, mask, polygons = (data / f"{name}.{ext}" for ext in ("tif", "mask.tif", "geojson"))
        write_synthetic_slide(image, synthetic_slide(H, W, seed=30 + k), PX, mask, polygons)
        label = polygons if k % 2 else mask  # both label kinds
        rows.append({"subject": name, "image": image, "label": label, "split": split})
    write_tsv(data / "slides.tsv", rows, ["subject", "image", "label", "split"])
    wsi = wsi_config(data / "slides.tsv")
    slides = [Subject(r["subject"], str(r["image"]), str(r["label"]), r["split"]) for r in rows]
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(work)  # the stages write under results/wsi of the working directory
        tissue = [prepare_slide(s, wsi["classes"], None, 1.0, 64, 256) for s in slides]
        stores = [slide_patches(s, wsi["classes"], None, 16, 0.5, "none", 0, 1) for s in slides[:2]]
        write_shard_table("tissue.tsv", tissue, [], ["subject", "plan", "split"])
        write_shard_table("patches.tsv", stores, [], ["subject", "store"])
    return {"work": work, "wsi": wsi, "slides": slides}


def script_args(run: dict, out: Path, checkpoints: Path) -> list[str]:
    return [
        sys.executable,
        str(REPO / "scripts" / "wsi_train.py"),
        "--wsi",
        json.dumps(run["wsi"]),
        "--privacy",
        json.dumps(default_config()["privacy"]),
        "--manifests",
        "patches.tsv",
        "--tissue",
        "tissue.tsv",
        "--out-dir",
        str(out),
        "--checkpoint-dir",
        str(checkpoints),
    ]


def start(run: dict, out: Path, checkpoints: Path) -> subprocess.Popen:
    return subprocess.Popen(
        script_args(run, out, checkpoints),
        cwd=run["work"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=clean_env(),
    )


def wait_for_first_checkpoint(proc: subprocess.Popen) -> int:
    """Read ``proc``'s log up to its first checkpoint; returns that checkpoint's global step."""
    seen = []
    for line in proc.stderr:
        seen.append(line)
        match = CHECKPOINT_LINE.search(line)
        if match:
            return int(match[1])
    proc.wait()
    raise AssertionError(f"no checkpoint was written:\n{''.join(seen)[-3000:]}")


@pytest.fixture(scope="module")
def uninterrupted(slide_run, tmp_path_factory) -> dict:
    """The reference: scripts/wsi_train.py run once to the end."""
    out = tmp_path_factory.mktemp("reference")
    proc = subprocess.run(
        script_args(slide_run, out, out / "checkpoints"),
        cwd=slide_run["work"],
        capture_output=True,
        text=True,
        env=clean_env(),
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return {"out": out, "log": proc.stderr, "last": load(out / "last.pt")}


# ------------------------------------------------------------------ the slide task's pieces


def test_slide_input_is_rgb_in_0_1_on_the_device_in_the_training_precision():
    rgb = torch.tensor([0, 51, 255], dtype=torch.uint8).reshape(1, 3, 1, 1)
    x = slide_input(rgb, torch.device("cpu"), torch.float64)
    assert x.dtype == torch.float64
    assert x.flatten().tolist() == [0.0, 0.2, 1.0]


def test_slide_augmentation_is_drawn_per_patch_from_its_seed_and_moves_the_labels():
    gen = torch.Generator().manual_seed(0)
    label = torch.randint(0, 2, (3, 1, 16, 16), generator=gen)
    image = torch.cat([label.float(), torch.rand(3, 2, 16, 16, generator=gen)], 1) * 0.5 + 0.25
    seeds = [11, 12, 13]
    batch_image, batch_label = augment_rgb(image, label, seeds)
    for k, seed in enumerate(seeds):  # the same whatever the batch it is in
        one_image, one_label = augment_rgb_sample(image[k], label[k], seed)
        assert torch.equal(batch_image[k], one_image) and torch.equal(batch_label[k], one_label)
    again, _ = augment_rgb(image, label, seeds)
    assert torch.equal(again, batch_image)
    # channel 0 encodes the label: after the same flips and turns, and a monotonic colour
    # change, the labelled pixels are still the brighter ones
    for k in range(3):
        lit = batch_image[k, 0][batch_label[k, 0] == 1]
        dark = batch_image[k, 0][batch_label[k, 0] == 0]
        assert lit.min() > dark.max()
    assert not torch.equal(augment_rgb(image, label, [1, 2, 3])[1], batch_label)


def test_validation_slides_are_the_prepared_val_slides_and_need_a_label(tmp_path):
    slides = [
        Subject("a", "a.tif", "a.geojson", "train"),
        Subject("v1", "v1.tif", "v1.geojson", "val"),
        Subject("v2", "v2.tif", "v2.geojson", "val"),
        Subject("v3", "v3.tif", None, "val"),
    ]
    table = tmp_path / "tissue.tsv"
    rows = [
        {"subject": "a", "problem": ""},
        {"subject": "v1", "problem": ""},
        {"subject": "v2", "problem": "no tissue found"},
    ]
    write_tsv(table, rows, ["subject", "problem"])
    assert [s.subject for s in validation_slides(slides, [table])] == ["v1"]
    write_tsv(table, [*rows, {"subject": "v3", "problem": ""}], ["subject", "problem"])
    with pytest.raises(CohortsegError, match=r"slides v3: split val but no label"):
        validation_slides(slides, [table])


# ------------------------------------------------------------------ training, in this process


def test_slides_train_with_validation_dice_and_best_and_last_checkpoints(
    slide_run, tmp_path, monkeypatch
):
    monkeypatch.chdir(slide_run["work"])
    wsi = slide_run["wsi"]
    config = {"model": wsi["model"], "training": {**wsi["training"], "epochs": 2}}
    plan = slide_training_plan(wsi["classes"], 1.0, 64)
    stores = [r["store"] for r in read_tsv("patches.tsv")]
    validation = SlideValidation(validation_slides(slide_run["slides"], ["tissue.tsv"]))
    assert [s.subject for s in validation.slides] == ["wsi-v"]

    row = train_slide_model(config, plan, stores, validation, tmp_path)

    log = read_tsv(tmp_path / "training_log.tsv")
    assert [r["epoch"] for r in log] == ["1", "2"]
    dice = [float(r["val_dice_tumour"]) for r in log]
    assert all(0.0 <= d <= 1.0 for d in dice)
    assert row["val_dice_tumour"] == pytest.approx(dice[-1], abs=1e-6)
    assert (tmp_path / "learning_curve.png").read_bytes()[:4] == b"\x89PNG"
    best = load(tmp_path / "best.pt")
    assert best["task"] == "slide" and (best["spatial_dims"], best["in_channels"]) == (2, 3)
    assert best["plan"]["hash"] == plan["hash"] and best["plan"]["classes"] == ["tumour"]
    assert best["val_dice_mean"] == pytest.approx(max(dice))
    net, _ = load_slide_model(tmp_path / "best.pt", torch.device("cpu"))
    probs = slide_predictor(net, torch.device("cpu"))(np.zeros((2, 3, 64, 64), np.uint8))
    assert probs.shape == (2, 2, 64, 64) and np.allclose(probs.sum(1), 1, atol=1e-5)


def test_slides_without_validation_slides_keep_the_last_weights_as_best(
    slide_run, tmp_path, monkeypatch
):
    monkeypatch.chdir(slide_run["work"])
    wsi = slide_run["wsi"]
    config = {"model": wsi["model"], "training": {**wsi["training"], "epochs": 1}}
    stores = [r["store"] for r in read_tsv("patches.tsv")]
    plan = slide_training_plan(wsi["classes"], 1.0, 64)
    row = train_slide_model(config, plan, stores, SlideValidation(), tmp_path)
    assert math.isnan(row["val_dice_mean"])
    best, last = (load(tmp_path / name)["model_state"] for name in ("best.pt", "last.pt"))
    assert all(torch.equal(best[k], last[k]) for k in last)


# ------------------------------------------------------------------ real processes, stopped


@pytest.mark.slow
def test_slide_training_killed_after_a_checkpoint_resumes_to_the_same_weights(
    slide_run, uninterrupted, tmp_path
):
    out, checkpoints = tmp_path / "model", tmp_path / "checkpoints"
    proc = start(slide_run, out, checkpoints)
    try:
        wait_for_first_checkpoint(proc)
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == -signal.SIGKILL
    killed = load(checkpoints / "last.pt")
    assert not killed["finished"] and 0 < killed["global_step"] < STEPS
    assert not (out / "best.pt").exists()

    again = subprocess.run(
        script_args(slide_run, out, checkpoints),
        cwd=slide_run["work"],
        capture_output=True,
        text=True,
        env=clean_env(),
        timeout=600,
    )
    assert again.returncode == 0, again.stderr[-4000:]
    log = again.stderr
    resumed = re.search(r"resumed from (\S+): epoch (\d+), step (\d+) \(global step (\d+)\)", log)
    assert resumed, log[-3000:]
    assert resumed[1] == str(checkpoints / "last.pt")
    assert int(resumed[4]) == killed["global_step"]
    later = [int(m[1]) for m in CHECKPOINT_LINE.finditer(log)]
    assert later and min(later) > killed["global_step"]  # the global step goes on from there
    assert "epoch 3/3:" in log
    final = load(out / "last.pt")
    assert final["finished"] and final["global_step"] == STEPS
    assert [r["epoch"] for r in read_tsv(out / "training_log.tsv")] == ["1", "2", "3"]
    reference = uninterrupted["last"]["model_state"]
    for name, weights in final["model_state"].items():
        assert torch.equal(weights, reference[name]), name
    assert not (checkpoints / "last.pt").exists()  # the resume files go once training is done
    assert load(out / "best.pt")["task"] == "slide"


@pytest.mark.slow
def test_slide_training_stopped_by_sigterm_writes_last_pt_and_exits_75(slide_run, tmp_path):
    out, checkpoints = tmp_path / "model", tmp_path / "checkpoints"
    proc = start(slide_run, out, checkpoints)
    try:
        wait_for_first_checkpoint(proc)
        proc.send_signal(signal.SIGTERM)
        _, rest = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == EXIT_INTERRUPTED == 75, rest[-3000:]
    assert "SIGTERM: stopped after epoch" in rest
    state = load(checkpoints / "last.pt")
    assert not state["finished"] and 0 < state["global_step"] < STEPS
    assert state["task"] == "slide"
    assert not (out / "best.pt").exists()  # the model appears only when training is done
