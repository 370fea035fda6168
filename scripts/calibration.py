"""Calibration of the model's probabilities on the validation split: reliability diagram and
expected calibration error (results/calibration.json, with the model's SHA-256;
results/report/calibration.png)."""

import argparse
import os

import torch

from cohortseg.core.io import write_json
from cohortseg.inference.shard import cpu_compute_threads
from cohortseg.networks.build import load_model
from cohortseg.networks.device import pick_device
from cohortseg.trust.calibration import calibration_bins, calibration_summary, plot_reliability
from cohortseg.workflow.cli import json_arg, run
from cohortseg.workflow.cohort import training_inputs, workflow_cohort
from cohortseg.workflow.registry import model_sha256


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cohort", type=json_arg, required=True, help="cohort config (JSON)")
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--inference", type=json_arg, required=True, help="inference config")
    parser.add_argument("--summary", required=True, help="output JSON")
    parser.add_argument("--figure", required=True, help="output PNG")
    args = parser.parse_args()
    device = pick_device(args.inference["device"])
    if device.type == "cpu":
        torch.set_num_threads(cpu_compute_threads(os.environ))
    net, plan = load_model(args.checkpoint, device)
    _, val = training_inputs(workflow_cohort(args.cohort))
    bins = calibration_bins(net, plan, val, args.inference, device)
    summary = {
        **calibration_summary(bins, len(val)),
        "tta": args.inference["tta"],
        "model_sha256": model_sha256(args.checkpoint),
    }
    write_json(args.summary, summary)
    title = f"Validation split, every voxel of the body crop (TTA: {args.inference['tta']})"
    plot_reliability(summary, title, args.figure)


if __name__ == "__main__":
    run(main)
