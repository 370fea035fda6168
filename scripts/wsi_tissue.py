"""Tissue and plan of one shard of slides: each slide opened with its pixel size, its level
chosen, its tissue detected and its labels checked; bad slides become one line each of the
shard's table, the others go on."""

import argparse

from cohortseg.workflow.cli import run
from cohortseg.wsi.cohort import add_slide_shard_arguments, job_slides
from cohortseg.wsi.stages import prepare_slide, try_each, write_shard_table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    add_slide_shard_arguments(parser)
    args = parser.parse_args()
    cfg = args.wsi
    todo = job_slides(args, "tissue")
    rows, problems = try_each(
        todo,
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
