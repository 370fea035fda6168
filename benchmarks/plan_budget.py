"""What a memory budget (``plan.memory_budget_gb``) buys: for each budget, the 3d_fullres
patch and batch size cohortseg plans for a cohort's fingerprint, and the time (and on CUDA the
peak memory) of one training step of the planned network on this machine.

The network is the plan's (``model.name: auto``: MONAI's DynUNet with nnU-Net's topology and
deep supervision); the step is a forward pass in training mode, cross-entropy on every
deep-supervision head, backward and an SGD step, with bf16 autocast on CUDA as cohortseg
trains. Prints one ``name: value unit`` line per figure.

    python benchmarks/plan_budget.py                                  # brain MRI, CPU budgets
    python benchmarks/plan_budget.py --budgets 8 24 --device cuda     # nnU-Net's GPU targets
    python benchmarks/plan_budget.py --dataset ct --budgets 8
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch
from monai.networks.nets import DynUNet

from cohortseg.networks.device import pick_device
from cohortseg.networks.topology import auto_network, dynunet_kwargs
from cohortseg.preprocessing.configurations import plan_configurations

DATA = Path(__file__).resolve().parents[1] / "tests" / "preprocessing" / "data"


def step_time(network: dict, batch: int, n_classes: int, device: torch.device, steps: int):
    """Median wall and CPU seconds (this process's, all threads) of a training step, and the
    peak CUDA memory (GB; None on CPU)."""
    net = DynUNet(3, 1, n_classes, **dynunet_kwargs(network)).to(device).train()
    optimizer = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.99, nesterov=True)
    x = torch.randn(batch, 1, *network["patch_size"], device=device)
    y = torch.randint(0, n_classes, (batch, *network["patch_size"]), device=device)
    times, cpu = [], []
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    for k in range(steps + 1):  # the first step warms up
        start, start_cpu = time.perf_counter(), time.process_time()
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device.type, torch.bfloat16, enabled=device.type == "cuda"):
            heads = net(x)
            loss = sum(
                torch.nn.functional.cross_entropy(heads[:, h].float(), y)
                for h in range(heads.shape[1])
            )
        loss.backward()
        optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if k:
            times.append(time.perf_counter() - start)
            cpu.append(time.process_time() - start_cpu)
    peak = torch.cuda.max_memory_allocated(device) / 1e9 if device.type == "cuda" else None
    return sorted(times)[len(times) // 2], sorted(cpu)[len(cpu) // 2], peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dataset", default="brain_mri", help="a reference fingerprint's name")
    parser.add_argument("--budgets", type=float, nargs="+", default=[0.25, 0.5, 1.0, 2.0])
    parser.add_argument("--device", default="cpu", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per budget")
    args = parser.parse_args()
    fp = json.loads((DATA / f"nnunet_plans_{args.dataset}.json").read_text())["fingerprint"]
    device = pick_device(args.device)
    n_classes = fp["classes"] + 1
    print(f"threads: {torch.get_num_threads()} cpu (of {os.cpu_count()})")
    for budget in args.budgets:
        config = plan_configurations(fp["spacings_mm"], fp["shapes"], n_classes, budget)
        full = config["3d_fullres"]
        network = auto_network(full["target_spacing_mm"], full["patch_size"])
        wall, cpu, peak = step_time(network, full["batch_size"], n_classes, device, args.steps)
        name = f"{args.dataset}_{budget:g}gb"
        print(f"{name}_patch: {'x'.join(map(str, full['patch_size']))} voxels")
        print(f"{name}_batch_size: {full['batch_size']} patches")
        print(f"{name}_step_time: {wall:.3f} s ({device.type})")
        print(f"{name}_step_cpu_time: {cpu:.3f} s")
        if peak is not None:
            print(f"{name}_peak_memory: {peak:.2f} GB")


if __name__ == "__main__":
    main()
