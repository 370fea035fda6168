"""Dice of the current model against perturbation strength, per perturbation.

Takes a finished demo run (``--run``, default ``.``: its ``results/model/best.pt`` and the demo
cohort's images and labels), perturbs its ``--split`` subjects (default ``test``) with each of
:data:`cohortseg.trust.perturbations.ROBUSTNESS` (Gaussian noise, bias field, intensity scaling,
gamma, resolution loss along one axis, rotation) at each of ``--strengths`` (0..1; what 1 means is
:data:`cohortseg.trust.perturbations.MAXIMUM`), segments every copy as one shard (``--tta``) and
prints one line per perturbation and strength::

    noise.strength_0.5.mean_dice: 0.8123
    noise.strength_0.5.mean_uncertainty: 0.0456

(strength 0 is the clean copies), then writes the plot to ``--plot`` (PNG). The workflow's
``robustness`` rule draws the same plot for the report.

    python benchmarks/robustness.py --run /path/to/finished/demo/run --plot robustness.png
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

import torch
import yaml

from cohortseg.core.cohort import demo_subjects
from cohortseg.inference.shard import cpu_compute_threads
from cohortseg.trust.perturbations import ROBUSTNESS
from cohortseg.trust.robustness import (
    dice_by_strength,
    perturbed_copies,
    plot_robustness,
    segment_and_score,
)

REPO = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", default=".", help="a finished demo run's working directory")
    parser.add_argument("--split", default="test")
    parser.add_argument("--strengths", type=float, nargs="+", default=[0.25, 0.5, 0.75, 1.0])
    parser.add_argument("--tta", default="none", choices=["none", "mirror"])
    parser.add_argument("--plot", default="robustness.png", help="output PNG")
    args = parser.parse_args(argv)
    torch.set_num_threads(cpu_compute_threads(os.environ))
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    run = Path(args.run)
    subjects = [
        (s.subject, str(run / s.image), str(run / s.label))
        for s in demo_subjects(config["demo"])
        if s.split == args.split
    ]
    classes = config["classes"]
    inference = {**config["inference"], "device": "cpu", "tta": args.tta}
    with tempfile.TemporaryDirectory() as tmp:
        copies = perturbed_copies(subjects, ROBUSTNESS, args.strengths, tmp)
        rows, seconds = segment_and_score(
            str(run / "results/model/best.pt"), copies, inference, classes, tmp
        )
    print(f"volumes: {len(copies)}")
    print(f"seconds_per_volume: {seconds:.3f} s")
    table = dice_by_strength(rows, classes)
    for r in table:
        for key in ("mean_dice", "mean_uncertainty"):
            print(f"{r['perturbation']}.strength_{r['strength']:g}.{key}: {r[key]:.4f}")
    plot_robustness(table, f"{len(subjects)} {args.split} subjects, TTA {args.tta}", args.plot)
    print(f"plot: {args.plot}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
