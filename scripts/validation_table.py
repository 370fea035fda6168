"""Join the shards' validation tables into results/qc/invalid_subjects.tsv."""

import argparse

from cohortseg.cli import run
from cohortseg.validate import read_problems, write_problems


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--shards", nargs="+", required=True, help="per-shard problem TSVs")
    parser.add_argument("--output", required=True, help="the joined TSV")
    args = parser.parse_args()
    write_problems(args.output, [p for path in args.shards for p in read_problems(path)])


if __name__ == "__main__":
    run(main)
