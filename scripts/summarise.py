"""Join the shards' metrics into results/metrics.tsv and write the cohort summary."""

import argparse

from cohortseg.cli import run
from cohortseg.io import read_tsv, write_json, write_tsv
from cohortseg.metrics import metric_columns, summarise
from cohortseg.validate import read_problems


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--shards", nargs="+", required=True, help="per-shard metric TSVs")
    parser.add_argument("--classes", nargs="+", required=True)
    parser.add_argument("--metrics", required=True, help="output TSV")
    parser.add_argument("--summary", required=True, help="output JSON")
    parser.add_argument("--invalid", required=True, help="results/qc/invalid_subjects.tsv")
    args = parser.parse_args()
    rows = [row for path in args.shards for row in read_tsv(path)]
    write_tsv(args.metrics, rows, metric_columns(args.classes))
    summary = summarise(rows, args.classes)
    problems = read_problems(args.invalid)
    summary["n_segmented"] = len(rows)
    summary["invalid_subjects"] = sorted({p.subject for p in problems})
    summary["problems"] = [str(p) for p in problems]
    write_json(args.summary, summary)


if __name__ == "__main__":
    run(main)
