"""Segment one shard of subjects with one model load."""

import argparse

from cohortseg.cli import json_arg, run
from cohortseg.infer import ShardItem, check_shard, segment_shard, write_manifest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--subjects", nargs="+", required=True)
    parser.add_argument("--images", nargs="+", required=True)
    parser.add_argument("--outputs", nargs="+", required=True)
    parser.add_argument("--manifest", required=True, help="the shard's manifest (TSV) to write")
    parser.add_argument("--inference", type=json_arg, required=True, help="inference config")
    args = parser.parse_args()
    if not len(args.subjects) == len(args.images) == len(args.outputs):
        parser.error("--subjects, --images and --outputs need the same number of values")
    items = [ShardItem(*t) for t in zip(args.subjects, args.images, args.outputs, strict=True)]
    check_shard(segment_shard(args.checkpoint, items, args.inference))
    write_manifest(args.manifest, items)


if __name__ == "__main__":
    run(main)
