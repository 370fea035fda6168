"""Segment one shard of subjects with one model load, then write the shard's uncertainty table
and, last, its manifest (naming the model's SHA-256)."""

import argparse
import os

import torch

from cohortseg.core.failures import check_shard
from cohortseg.inference.shard import (
    ShardItem,
    cpu_compute_threads,
    segment_shard,
    write_shard_manifest,
    write_uncertainty_table,
)
from cohortseg.networks.device import pick_device
from cohortseg.workflow.cli import add_shard_arguments, json_arg, run, shard_subjects
from cohortseg.workflow.paths import segmentation_path, uncertainty_map_path
from cohortseg.workflow.registry import model_sha256


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    add_shard_arguments(parser)
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--manifest", required=True, help="the shard's manifest (TSV) to write")
    parser.add_argument("--uncertainty", required=True, help="the shard's uncertainty table (TSV)")
    parser.add_argument("--classes", nargs="+", required=True)
    parser.add_argument("--inference", type=json_arg, required=True, help="inference config")
    args = parser.parse_args()
    if pick_device(args.inference["device"]).type == "cpu":
        torch.set_num_threads(cpu_compute_threads(os.environ))
    subjects = shard_subjects(args, "infer")
    maps = args.inference["uncertainty_maps"]
    items = [
        ShardItem(
            s.subject,
            s.image,
            segmentation_path(s.subject),
            uncertainty_map_path(s.subject) if maps else None,
        )
        for s in subjects
    ]
    check_shard(segment_shard(args.checkpoint, items, args.inference))
    write_uncertainty_table(args.uncertainty, items, args.classes)
    write_shard_manifest(args.manifest, items, model_sha256=model_sha256(args.checkpoint))


if __name__ == "__main__":
    run(main)
