"""A federated site's local round on the device its ``training.device`` picks: what Flower's
ClientApp runs in a SuperNode started with a GPU (``supernode.sbatch --gpus=1``).

Writes a patch store of a synthetic volume with the pipeline's ``write_store``, then runs
:func:`cohortseg.federated.task.local_round` from config.yaml's network (the device from
:func:`cohortseg.training.distributed.rank_device`, as ``site_round`` gets it), noting the device
of every step's batch. Prints ``name: value unit`` lines: the device, whether every batch was
on it, the steps, the round's time and loss, and ``round_ok``. Asked for CUDA where there is
none, it prints ``skipped`` and exits 0.

    python benchmarks/federated_round.py                       # on the GPU
    python benchmarks/federated_round.py --device cpu --patch-size 16 16 16 --steps 2
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import yaml

from cohortseg.federated.task import initial_state, local_round, site_task
from cohortseg.preprocessing.patches import write_store
from cohortseg.training.distributed import rank_device

REPO = Path(__file__).resolve().parents[1]


def synthetic_store(path: Path, patch: list[int], n_classes: int, n_patches: int) -> None:
    """A patch store of a volume 1.5 × the patch with a labelled ellipsoid per class."""
    shape = [math.ceil(1.5 * p) for p in patch]
    rng = np.random.default_rng(0)
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij"))
    label = np.zeros(shape, np.uint8)
    for c in range(1, n_classes):
        centre = rng.uniform(-0.4, 0.4, 3)[:, None, None, None]
        label[(((grid - centre) / 0.3) ** 2).sum(0) < 1] = c
    image = rng.normal(0, 0.3, shape).astype(np.float32) + label
    plan = {"patch_size": patch, "hash": "benchmark"}
    write_store(path, "site", image, label, np.eye(4), [1.0] * 3, plan, n_patches, 0.5, "lzf", 0, 0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda", help="the site's training.device")
    parser.add_argument("--patch-size", type=int, nargs=3, default=[64, 64, 64])
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--steps", type=int, default=10)
    args = parser.parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("skipped: no_cuda_device")
        return 0
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    training = {**config["training"], "device": args.device, "batch_size": args.batch}
    config = {**config, "training": training}
    device = rank_device(args.device)
    plan = {"patch_size": args.patch_size, "hash": "benchmark", "classes": config["classes"]}
    seen: list[torch.device] = []
    task = site_task(config, plan)

    def augment(image, label, seeds):
        seen.append(image.device)
        return task.augment(image, label, seeds)

    with tempfile.TemporaryDirectory(prefix="cohortseg-fed-") as tmp:
        store = Path(tmp) / "site.h5"
        synthetic_store(store, args.patch_size, len(plan["classes"]) + 1, 4 * args.batch)
        start = initial_state(config["model"], plan, int(training["seed"]))
        tick = time.perf_counter()
        state, metrics = local_round(
            start,
            config,
            plan,
            [str(store)],
            1,
            2,
            args.steps,
            device=device,
            task=dataclasses.replace(task, augment=augment),
        )
        seconds = time.perf_counter() - tick
    on_device = len(seen) == args.steps and all(d == device for d in seen)
    moved = any(not torch.equal(state[k], start[k]) for k in start)
    ok = on_device and moved and math.isfinite(metrics["train-loss"])
    print(f"site_device: {device}")
    print(f"batches_on_device: {str(on_device).lower()}")
    print(f"round_steps: {int(metrics['steps'])} steps")
    print(f"round_time: {seconds:.4g} s")
    print(f"round_step_time: {seconds / max(1, args.steps):.4g} s")
    print(f"round_train_loss: {metrics['train-loss']:.4g}")
    print(f"round_ok: {str(ok).lower()}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
