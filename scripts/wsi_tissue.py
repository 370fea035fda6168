"""Tissue and plan of one shard of slides: each slide opened with its pixel size, its level
chosen, its tissue detected and its labels checked; bad slides become one line each of the
shard's table, the others go on."""

import argparse

from cohortseg.cli import json_arg, run
from cohortseg.wsicohort import load_slides, slide_shards
from cohortseg.wsistages import prepare_slide, try_each, write_shard_table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--wsi", type=json_arg, required=True, help="the wsi config (JSON)")
    parser.add_argument("--privacy", type=json_arg, required=True, help="privacy config, JSON")
    parser.add_argument("--shard-size", required=True, help="shard_size (a number or auto)")
    parser.add_argument("--shard", required=True)
    parser.add_argument("--table", required=True, help="the shard's table (TSV) to write")
    args = parser.parse_args()
    cfg = args.wsi
    slides = load_slides(cfg, args.privacy)
    members = set(slide_shards(slides, args.shard_size, "tissue")[args.shard])
    rows, problems = try_each(
        [s for s in slides if s.subject in members],
        lambda s: prepare_slide(
            s,
            cfg["classes"],
            cfg["pixel_size_um"],
            float(cfg["target_pixel_size_um"]),
            int(cfg["patch_size"]),
            int(cfg["tissue_max_side_px"]),
        ),
        "tissue",
    )
    write_shard_table(args.table, rows, problems, ["subject", "plan", "split"])


if __name__ == "__main__":
    run(main)
