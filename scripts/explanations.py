"""Explanations for the QC-montage subjects: a Grad-CAM map of one class drawn over the same
slices as each subject's montage, and model.json naming the model that made them."""

import argparse
import os
from pathlib import Path

import torch

from cohortseg.core.errors import CohortsegError
from cohortseg.core.io import read_json, read_tsv, write_json
from cohortseg.inference.shard import cpu_compute_threads
from cohortseg.networks.build import load_model
from cohortseg.networks.device import pick_device
from cohortseg.trust.explanations import explained_layer, write_explanations
from cohortseg.workflow.cli import json_arg, run
from cohortseg.workflow.cohort import workflow_cohort
from cohortseg.workflow.registry import model_identity


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--montages", required=True, help="results/qc/montages (selection.json)")
    parser.add_argument("--stats", required=True, help="results/stats.tsv (the segmentations)")
    parser.add_argument("--cohort", type=json_arg, required=True, help="cohort config (JSON)")
    parser.add_argument("--report", type=json_arg, required=True, help="report config (JSON)")
    parser.add_argument("--device", required=True, help="inference.device")
    parser.add_argument("--out-dir", required=True)
    args = parser.parse_args()
    device = pick_device(args.device)
    if device.type == "cpu":
        torch.set_num_threads(cpu_compute_threads(os.environ))
    net, plan = load_model(args.checkpoint, device)
    class_name = args.report["explain_class"] or plan["classes"][0]
    if class_name not in plan["classes"]:
        raise CohortsegError(
            f"report.explain_class {class_name!r} is not one of the classes {plan['classes']}"
        )
    selection = read_json(Path(args.montages) / "selection.json")
    segmentations = {r["subject"]: r["segmentation"] for r in read_tsv(args.stats)}
    images = {s.subject: s.image for s in workflow_cohort(args.cohort).subjects}
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    layer = explained_layer(net, args.report["explain_layer"])
    write_explanations(net, plan, selection, segmentations, images, class_name, layer, out, device)
    write_json(out / "model.json", {**model_identity(args.checkpoint), "class": class_name})


if __name__ == "__main__":
    run(main)
