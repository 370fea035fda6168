"""Segment one shard of slides tile by tile on their tissue: a pyramidal label TIFF and a PNG
overview per slide, and the shard's table of statistics (tissue and class areas in mm², Dice
where labelled); a slide that fails is one line of the table, the others go on."""

import argparse

import torch

from cohortseg.networks.device import pick_device
from cohortseg.workflow.cli import run
from cohortseg.wsi.cohort import add_slide_shard_arguments, job_slides
from cohortseg.wsi.stages import segment_and_measure, try_each, write_shard_table
from cohortseg.wsi.training import load_slide_model, slide_predictor


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    add_slide_shard_arguments(parser)
    parser.add_argument("--tissue", required=True, help="the shard's tissue table")
    parser.add_argument("--model", required=True, help="the slide model checkpoint")
    args = parser.parse_args()
    cfg, inference = args.wsi, args.wsi["inference"]
    classes = cfg["classes"]
    todo = job_slides(args, "infer", args.tissue)
    device = pick_device(inference["device"])
    net, _ = load_slide_model(args.model, device)
    predict = slide_predictor(net, device)
    with torch.inference_mode():
        rows, problems = try_each(
            todo,
            lambda s: segment_and_measure(
                s,
                predict,
                classes,
                cfg["pixel_size_um"],
                overlap=float(inference["overlap"]),
                sw_batch_size=int(inference["sw_batch_size"]),
                max_memory_mb=float(cfg["max_memory_mb"]),
                overview_px=int(cfg["overview_px"]),
            ),
            "infer",
        )
    columns = ["subject", "segmentation", "overview", "split", "level", "pixel_size_um"]
    columns += ["tissue_mm2", *(f"{c}_mm2" for c in classes), *(f"{c}_dice" for c in classes)]
    write_shard_table(args.table, rows, problems, [*columns, "seconds"])


if __name__ == "__main__":
    run(main)
