"""Patches of one shard of training slides: origins on tissue (a share centred on labelled
pixels), read from the slide patch by patch into one HDF5 store per slide."""

import argparse
import zlib

from cohortseg.cli import json_arg, run
from cohortseg.wsicohort import load_slides, slide_shards
from cohortseg.wsistages import shard_slides, slide_patches, try_each, write_shard_table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--wsi", type=json_arg, required=True, help="the wsi config (JSON)")
    parser.add_argument("--privacy", type=json_arg, required=True, help="privacy config, JSON")
    parser.add_argument("--patches", type=json_arg, required=True, help="patches config, JSON")
    parser.add_argument("--shard-size", required=True, help="shard_size (a number or auto)")
    parser.add_argument("--shard", required=True)
    parser.add_argument("--tissue", required=True, help="the shard's tissue table")
    parser.add_argument("--table", required=True, help="the shard's manifest (TSV) to write")
    args = parser.parse_args()
    cfg, patches = args.wsi, args.patches
    slides = load_slides(cfg, args.privacy)
    members = set(slide_shards(slides, args.shard_size, "patches")[args.shard])
    todo = shard_slides([s for s in slides if s.subject in members], args.tissue)
    rows, problems = try_each(
        todo,
        lambda s: slide_patches(
            s,
            cfg["classes"],
            cfg["pixel_size_um"],
            n_patches=int(cfg["patches_per_slide"]),
            foreground_fraction=float(patches["foreground_fraction"]),
            compression=patches["compression"],
            compression_level=int(patches["compression_level"]),
            # a per-slide seed that does not depend on the slide's position in the sheet
            seed=int(patches["seed"]) * 2**32 + zlib.crc32(s.subject.encode()),
        ),
        "patches",
    )
    write_shard_table(args.table, rows, problems, ["subject", "store"])


if __name__ == "__main__":
    run(main)
