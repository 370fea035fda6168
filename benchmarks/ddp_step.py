"""One data-parallel training step through cohortseg's DDP path, in a world of one: NCCL on a
GPU (so that the NCCL path has run at least once), Gloo on the CPU.

Builds config.yaml's network, wraps it with :func:`cohortseg.training.distributed.init` (``ddp``, no
launcher: a world of one) and takes ``--steps`` steps of :func:`cohortseg.training.loop.train_step`
on random patches of ``--patch-size``, then checks that an all-reduce of the loss gives the loss.
Prints ``name: value unit`` lines: the process-group backend, the device, the world size, the
time per step and whether the step ran.

    python benchmarks/ddp_step.py                   # NCCL on the GPU if there is one
    python benchmarks/ddp_step.py --device cpu --patch-size 16 16 16
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
import torch.distributed as dist
import yaml
from monai.losses import DiceCELoss

from cohortseg.networks.build import build_network
from cohortseg.training import distributed
from cohortseg.training.loop import train_step

REPO = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--patch-size", type=int, nargs=3, default=[128, 128, 128])
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--steps", type=int, default=3)
    args = parser.parse_args(argv)
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    ctx = distributed.init("ddp", args.device)
    try:
        torch.manual_seed(0)
        n_classes = len(config["classes"]) + 1
        net = build_network(config["model"], n_classes).to(ctx.device)
        optimizer = torch.optim.AdamW(net.parameters(), lr=1e-3)
        model, optimizer = ctx.wrap(net, optimizer)
        image = torch.randn(args.batch, 1, *args.patch_size, device=ctx.device)
        label = torch.randint(0, n_classes, (args.batch, 1, *args.patch_size), device=ctx.device)
        loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
        loss = train_step(model, optimizer, loss_fn, image, label)  # warm-up
        if ctx.device.type == "cuda":
            torch.cuda.synchronize(ctx.device)
        tick = time.perf_counter()
        for _ in range(args.steps):
            loss = train_step(model, optimizer, loss_fn, image, label)
        if ctx.device.type == "cuda":
            torch.cuda.synchronize(ctx.device)
        step_s = (time.perf_counter() - tick) / args.steps
        total = ctx.allreduce_sum([float(loss)])[0]
        print(f"ddp_backend: {dist.get_backend()}")
        print(f"ddp_device: {ctx.device}")
        print(f"ddp_world_size: {ctx.world_size} ranks")
        print(f"ddp_step_time: {step_s:.4g} s")
        print(f"ddp_step_ok: {str(abs(total - float(loss)) < 1e-6).lower()}")
    finally:
        ctx.shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
