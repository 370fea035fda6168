"""Train the 2D slide network on every training slide's patch store (the stores the patch
manifests list) and save it as a checkpoint with the slides' plan."""

import argparse

from cohortseg.core.errors import CohortsegError
from cohortseg.core.io import read_tsv
from cohortseg.networks.device import pick_device
from cohortseg.workflow.cli import json_arg, run
from cohortseg.wsi.stages import plan_hash
from cohortseg.wsi.training import train_slide_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--wsi", type=json_arg, required=True, help="the wsi config (JSON)")
    parser.add_argument("--manifests", nargs="+", required=True, help="patch shard manifests")
    parser.add_argument("--checkpoint", required=True, help="the model file to write")
    args = parser.parse_args()
    cfg, training = args.wsi, args.wsi["training"]
    rows = [r for m in args.manifests for r in read_tsv(m) if not r.get("problem")]
    if not rows:
        raise CohortsegError("no training slide gave patches: see results/wsi/patches/*.tsv")
    size = int(cfg["patch_size"])
    plan = {
        "patch_size": [size, size],
        "target_pixel_size_um": float(cfg["target_pixel_size_um"]),
        "hash": plan_hash(cfg["classes"], cfg["target_pixel_size_um"], size),
    }
    train_slide_model(
        [r["store"] for r in rows],
        cfg["classes"],
        cfg["model"],
        plan,
        args.checkpoint,
        steps=int(training["steps"]),
        batch_size=int(training["batch_size"]),
        learning_rate=float(training["learning_rate"]),
        seed=int(training["seed"]),
        device=str(pick_device(training["device"])),
    )


if __name__ == "__main__":
    run(main)
