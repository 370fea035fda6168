"""Robustness of the current model: a few labelled test subjects perturbed at graded strengths
(noise, bias field, intensity scaling, gamma, resolution loss, rotation), segmented, and their
Dice and uncertainty per perturbation and strength (table, with the model's SHA-256, and plot
for the report)."""

import argparse
import os
import tempfile

import torch

from cohortseg.core.io import write_tsv
from cohortseg.inference.shard import cpu_compute_threads
from cohortseg.networks.device import pick_device
from cohortseg.trust.perturbations import ROBUSTNESS
from cohortseg.trust.robustness import (
    dice_by_strength,
    perturbed_copies,
    plot_robustness,
    segment_and_score,
)
from cohortseg.workflow.cli import json_arg, run
from cohortseg.workflow.cohort import excluded_subjects, robustness_subjects, workflow_cohort
from cohortseg.workflow.registry import model_sha256


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cohort", type=json_arg, required=True, help="cohort config (JSON)")
    parser.add_argument("--invalid", required=True, help="results/qc/invalid_subjects.tsv")
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--inference", type=json_arg, required=True, help="inference config")
    parser.add_argument("--classes", nargs="+", required=True)
    parser.add_argument("--subjects", type=int, required=True, help="report.robustness_subjects")
    parser.add_argument("--strengths", type=float, nargs="+", required=True)
    parser.add_argument("--table", required=True, help="output TSV")
    parser.add_argument("--figure", required=True, help="output PNG")
    args = parser.parse_args()
    if pick_device(args.inference["device"]).type == "cpu":
        torch.set_num_threads(cpu_compute_threads(os.environ))
    invalid = excluded_subjects(args.invalid, args.cohort["validation"]["on_invalid"])
    cohort = workflow_cohort(args.cohort)
    chosen = [
        (s.subject, s.image, s.label) for s in robustness_subjects(cohort, args.subjects, invalid)
    ]
    with tempfile.TemporaryDirectory(prefix="cohortseg-robustness-") as tmp:
        copies = perturbed_copies(chosen, ROBUSTNESS, args.strengths, tmp)
        rows, _ = segment_and_score(args.checkpoint, copies, args.inference, args.classes, tmp)
    digest = model_sha256(args.checkpoint)
    table = [{**r, "model_sha256": digest} for r in dice_by_strength(rows, args.classes)]
    columns = ["perturbation", "strength", "subjects", "mean_dice"]
    columns += [f"dice_{c}" for c in args.classes] + ["mean_uncertainty", "model_sha256"]
    write_tsv(args.table, table, columns)
    title = f"{len(chosen)} test subject(s), TTA {args.inference['tta']}"
    plot_robustness(table, title, args.figure)


if __name__ == "__main__":
    run(main)
