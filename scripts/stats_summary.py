"""Join the shards' statistics into results/stats.tsv, flag outlying volumes by robust z-score
and write the cohort summary (with how many subjects were segmented, skipped or failed)."""

import argparse

from cohortseg.cli import json_arg, run
from cohortseg.io import read_tsv, write_json, write_tsv
from cohortseg.stats import flag_outliers, stats_columns, summarise_stats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--shards", nargs="+", required=True, help="per-shard statistics TSVs")
    parser.add_argument("--classes", nargs="+", required=True)
    parser.add_argument("--outlier-z", type=float, required=True, help="report.outlier_z")
    parser.add_argument("--cohort-size", type=int, required=True, help="subjects in the cohort")
    parser.add_argument(
        "--skipped", type=json_arg, required=True, help="JSON: reason -> subjects not segmented"
    )
    parser.add_argument("--table", required=True, help="output TSV")
    parser.add_argument("--summary", required=True, help="output JSON")
    args = parser.parse_args()
    rows = [row for path in args.shards for row in read_tsv(path)]
    rows = flag_outliers(rows, args.classes, args.outlier_z)
    write_tsv(args.table, rows, stats_columns(args.classes))
    summary = summarise_stats(rows, args.classes, args.outlier_z, args.cohort_size, args.skipped)
    write_json(args.summary, summary)


if __name__ == "__main__":
    run(main)
