"""Does the per-subject uncertainty mean something, and what does test-time augmentation cost?

Takes a finished demo run (``--run``, default ``.``: its ``results/model/best.pt`` and the demo
cohort's images and labels), copies the ``--split`` subjects (default ``test``) clean and
degraded (:data:`cohortseg.trust.perturbations.DEGRADATIONS`: noise, blur, contrast shift, at each
of ``--strengths``), segments them all as one shard without and with mirror test-time
augmentation, and prints, per TTA setting (``none``, ``mirror``):

- ``{tta}.spearman_uncertainty_vs_1_minus_dice``: Spearman's correlation between the subject's
  uncertainty (mean over the classes of ``uncertainty_{class}``) and 1 − its mean Dice;
- ``{tta}.spearman_disagreement_vs_1_minus_dice`` (mirror only): the same for the TTA members'
  disagreement;
- ``{tta}.degraded_above_clean``: share of degraded copies more uncertain than their clean one;
- ``{tta}.mean_dice_clean``, ``{tta}.mean_dice_all``: mean Dice over the classes, on the clean
  copies and on all;
- ``{tta}.seconds_per_volume``: wall time of the shard's segmentation per volume.

    python benchmarks/uncertainty.py --run /path/to/finished/demo/run
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

import numpy as np
import torch
import yaml

from cohortseg.core.cohort import demo_subjects
from cohortseg.inference.shard import cpu_compute_threads
from cohortseg.inference.uncertainty import spearman
from cohortseg.trust.perturbations import DEGRADATIONS
from cohortseg.trust.robustness import degraded_above_clean, perturbed_copies, segment_and_score

REPO = Path(__file__).resolve().parents[1]


def print_figure(name: str, value: object, unit: str = "") -> None:
    print(f"{name}: {value} {unit}".rstrip(), flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", default=".", help="a finished demo run's working directory")
    parser.add_argument("--split", default="test")
    parser.add_argument("--strengths", type=float, nargs="+", default=[0.5, 1.0])
    parser.add_argument("--tta", nargs="+", default=["none", "mirror"])
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
    with tempfile.TemporaryDirectory() as tmp:
        copies = perturbed_copies(subjects, DEGRADATIONS, args.strengths, tmp)
        print_figure("volumes", len(copies))
        for tta in args.tta:
            inference = {**config["inference"], "device": "cpu", "tta": tta}
            rows, seconds = segment_and_score(
                str(run / "results/model/best.pt"), copies, inference, classes, tmp
            )
            errors = [1 - r["mean_dice"] for r in rows]
            rho = spearman([r["mean_uncertainty"] for r in rows], errors)
            print_figure(f"{tta}.spearman_uncertainty_vs_1_minus_dice", f"{rho:.3f}")
            if tta != "none":
                disagreement = [
                    np.nanmean([r[f"tta_disagreement_{c}"] for c in classes]) for r in rows
                ]
                rho = spearman(disagreement, errors)
                print_figure(f"{tta}.spearman_disagreement_vs_1_minus_dice", f"{rho:.3f}")
            print_figure(f"{tta}.degraded_above_clean", f"{degraded_above_clean(rows):.3f}")
            clean = [r["mean_dice"] for r in rows if r["perturbation"] == "none"]
            print_figure(f"{tta}.mean_dice_clean", f"{np.mean(clean):.4f}")
            print_figure(f"{tta}.mean_dice_all", f"{np.mean([r['mean_dice'] for r in rows]):.4f}")
            print_figure(f"{tta}.seconds_per_volume", f"{seconds:.3f}", "s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
