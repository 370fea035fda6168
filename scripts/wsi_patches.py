"""Patches of one shard of training slides: origins on tissue (a share centred on labelled
pixels), read from the slide patch by patch into one HDF5 store per slide."""

import argparse
import zlib

from cohortseg.workflow.cli import json_arg, run
from cohortseg.wsi.cohort import add_slide_shard_arguments, job_slides
from cohortseg.wsi.stages import slide_patches, try_each, write_shard_table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    add_slide_shard_arguments(parser)
    parser.add_argument("--patches", type=json_arg, required=True, help="patches config, JSON")
    parser.add_argument("--tissue", required=True, help="the shard's tissue table")
    args = parser.parse_args()
    cfg, patches = args.wsi, args.patches
    todo = job_slides(args, "patches", args.tissue)
    rows, problems = try_each(
        todo,
        lambda s: slide_patches(
            s,
            cfg["classes"],
            cfg["pixel_size_um"],
            n_patches=int(cfg["patches_per_slide"]),
            foreground_fraction=float(patches["foreground_fraction"]),
            compression=cfg["compression"],
            compression_level=int(patches["compression_level"]),
            # a per-slide seed that does not depend on the slide's position in the sheet
            seed=int(patches["seed"]) * 2**32 + zlib.crc32(s.subject.encode()),
        ),
        "patches",
    )
    write_shard_table(args.table, rows, problems, ["subject", "store"])


if __name__ == "__main__":
    run(main)
