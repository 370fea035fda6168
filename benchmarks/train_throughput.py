"""Training throughput: voxels per second of the full training loop (HDF5 patch store →
DataLoader → device → augmentation → step) and of the same step on a batch already on the
device, and their ratio (how much of the device's speed the data path lets training use).

Prints one ``name: value unit`` line per figure; on CUDA also the peak GPU memory of each phase
(``torch.cuda.max_memory_allocated``). The step is the training's own (``train_step``: bf16
autocast on CUDA, Dice + cross-entropy, AdamW), the data come from a store written by the
pipeline's own ``write_store`` from a synthetic volume.

    python benchmarks/train_throughput.py                         # 128³ patches, batch 2
    python benchmarks/train_throughput.py --network wide          # 32..320 channels
    python benchmarks/train_throughput.py --patch-size full --shape 160 384 384 --batch 1 \\
        --activation-checkpointing                                # whole-volume training
    python benchmarks/train_throughput.py --patch-size 32 32 32 --steps 5   # a quick CPU run
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import yaml
from monai.losses import DiceCELoss
from torch.utils.data import DataLoader

from cohortseg.networks.build import build_network
from cohortseg.networks.device import pick_device
from cohortseg.preprocessing.patches import PatchDataset, write_store
from cohortseg.training.augment import augment
from cohortseg.training.batches import EpochBatchSampler, seed_everything
from cohortseg.training.loop import checkpoint_activations, train_step

REPO = Path(__file__).resolve().parents[1]
N_CLASSES = 4  # background and the demo's three classes
WIDE = {"name": "UNet", "channels": [32, 64, 128, 256, 320], "strides": [2, 2, 2, 2]}


def synthetic_volume(shape: list[int], seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A float32 image with three labelled ellipsoids of their own contrast, and its labels."""
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij"))
    label = np.zeros(shape, np.uint8)
    for c in range(1, N_CLASSES):
        centre = rng.uniform(-0.5, 0.5, 3)[:, None, None, None]
        radii = rng.uniform(0.15, 0.35, 3)[:, None, None, None]
        label[(((grid - centre) / radii) ** 2).sum(0) < 1] = c
    image = rng.normal(0, 0.3, shape).astype(np.float32) + label.astype(np.float32)
    return image, label


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def report(name: str, value: float, unit: str) -> None:
    print(f"{name}: {value:.4g} {unit}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--patch-size",
        nargs="+",
        default=["128", "128", "128"],
        help="three voxel counts, or 'full' to train on whole volumes of --shape",
    )
    parser.add_argument(
        "--shape",
        nargs=3,
        type=int,
        help="synthetic volume (voxels; default: 1.5 × the patch size)",
    )
    parser.add_argument("--batch", type=int, default=2, help="patches per step")
    parser.add_argument(
        "--network",
        choices=["default", "wide"],
        default="default",
        help="default: config.yaml's model; wide: UNet with channels 32, 64, 128, 256, 320",
    )
    parser.add_argument("--steps", type=int, default=20, help="timed steps of each phase")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps before each phase")
    parser.add_argument("--num-workers", type=int, default=2, help="DataLoader workers")
    parser.add_argument("--patches", type=int, default=8, help="patches in the store")
    parser.add_argument("--compression", default="lzf", choices=["gzip", "lzf", "none"])
    parser.add_argument("--activation-checkpointing", action="store_true")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--config", default=str(REPO / "config.yaml"))
    args = parser.parse_args()

    full = args.patch_size == ["full"]
    if full:
        if args.shape is None:
            parser.error("--patch-size full needs --shape X Y Z")
        patch = list(args.shape)
    elif len(args.patch_size) == 3:
        patch = [int(v) for v in args.patch_size]
    else:
        parser.error("--patch-size takes three integers or 'full'")
    shape = patch if full else list(args.shape or [math.ceil(1.5 * p) for p in patch])
    config = yaml.safe_load(Path(args.config).read_text())
    model = dict(config["model"])
    if args.network == "wide":
        model.update(WIDE)
    device = pick_device(args.device)
    seed_everything(0)

    with tempfile.TemporaryDirectory(prefix="cohortseg-bench-") as tmp:
        store = Path(tmp) / "bench.h5"
        image, label = synthetic_volume(shape, seed=0)
        start = time.perf_counter()
        write_store(
            store,
            "bench",
            image,
            label,
            np.eye(4),
            [1.0, 1.0, 1.0],
            {"patch_size": patch, "hash": "benchmark"},
            n_patches=args.patches,
            foreground_fraction=0.5,
            compression=args.compression,
            compression_level=4,
            seed=0,
        )
        del image, label
        store_seconds = time.perf_counter() - start

        dataset = PatchDataset([store])
        steps = args.warmup + args.steps
        sampler = EpochBatchSampler(len(dataset), args.batch, steps, seed=0)
        loader = DataLoader(
            dataset,
            batch_sampler=sampler,
            num_workers=args.num_workers,
            pin_memory=device.type == "cuda",
            persistent_workers=args.num_workers > 0,
        )
        net = build_network(model, N_CLASSES).to(device)
        if args.activation_checkpointing:
            checkpoint_activations(net)
        optimizer = torch.optim.AdamW(net.parameters(), lr=1e-3, weight_decay=3e-5)
        loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
        voxels = args.batch * math.prod(patch)

        print(f"device: {device}")
        if device.type == "cuda":
            print(f"device_name: {torch.cuda.get_device_name(device)}")
        print(f"network: {model['name']} channels {','.join(map(str, model['channels']))}")
        print(f"patch_size: {'x'.join(map(str, patch))} voxels")
        report("batch", args.batch, "patches")
        report("parameters", sum(p.numel() for p in net.parameters()) / 1e6, "M")
        report("store_write_time", store_seconds, "s")

        # 1. data path alone: HDF5 → DataLoader → device
        sampler.set_epoch(0)
        reset_memory(device)
        for step, (img, _) in enumerate(loader):
            if step == args.warmup:
                sync(device)
                start = time.perf_counter()
            img.to(device, non_blocking=True)
        sync(device)
        report(
            "loader_voxels_per_s", args.steps * voxels / (time.perf_counter() - start), "voxel/s"
        )

        # 2. the full training loop
        sampler.set_epoch(1)
        reset_memory(device)
        net.train()
        first = None
        for step, (img, lab) in enumerate(loader):
            if step == args.warmup:
                sync(device)
                start = time.perf_counter()
            img, lab = img.to(device, non_blocking=True), lab.to(device, non_blocking=True)
            seeds = sampler.sample_seeds(1, step)
            img, lab = augment(img, lab, seeds, config["training"]["augmentation"])
            if first is None:
                first = (img.clone(), lab.clone())
            train_step(net, optimizer, loss_fn, img, lab).item()
        sync(device)
        loop_seconds = (time.perf_counter() - start) / args.steps
        if device.type == "cuda":
            report(
                "peak_gpu_memory_full_loop", torch.cuda.max_memory_allocated(device) / 2**30, "GiB"
            )

        # 3. the same step on a batch already on the device
        reset_memory(device)
        img, lab = first
        for step in range(steps):
            if step == args.warmup:
                sync(device)
                start = time.perf_counter()
            train_step(net, optimizer, loss_fn, img, lab).item()
        sync(device)
        step_seconds = (time.perf_counter() - start) / args.steps
        if device.type == "cuda":
            report(
                "peak_gpu_memory_device_step",
                torch.cuda.max_memory_allocated(device) / 2**30,
                "GiB",
            )

        report("full_loop_step_time", loop_seconds, "s")
        report("device_step_time", step_seconds, "s")
        report("full_loop_voxels_per_s", voxels / loop_seconds, "voxel/s")
        report("device_step_voxels_per_s", voxels / step_seconds, "voxel/s")
        report("full_loop_over_device_step", step_seconds / loop_seconds, "ratio")


if __name__ == "__main__":
    main()
