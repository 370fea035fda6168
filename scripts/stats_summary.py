"""Join the shards' statistics into results/stats.tsv, flag outlying volumes by robust z-score
and write the cohort summary (with how many subjects were segmented, skipped or failed)."""

import argparse

from cohortseg.core.io import read_tsv, write_json, write_tsv
from cohortseg.evaluation.stats import flag_outliers, stats_columns, summarise_stats
from cohortseg.workflow.cli import json_arg, run
from cohortseg.workflow.cohort import (
    excluded_subjects,
    skipped_counts,
    stage_outputs,
    workflow_cohort,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cohort", type=json_arg, required=True, help="cohort config (JSON)")
    parser.add_argument("--invalid", required=True, help="results/qc/invalid_subjects.tsv")
    parser.add_argument("--classes", nargs="+", required=True)
    parser.add_argument("--outlier-z", type=float, required=True, help="report.outlier_z")
    parser.add_argument("--table", required=True, help="output TSV")
    parser.add_argument("--summary", required=True, help="output JSON")
    args = parser.parse_args()
    cohort = workflow_cohort(args.cohort)
    rows = [row for path in stage_outputs(cohort, "stats") for row in read_tsv(path)]
    rows = flag_outliers(rows, args.classes, args.outlier_z)
    write_tsv(args.table, rows, stats_columns(args.classes))
    invalid = excluded_subjects(args.invalid, args.cohort["validation"]["on_invalid"])
    skipped = skipped_counts(cohort, invalid)
    summary = summarise_stats(rows, args.classes, args.outlier_z, len(cohort.subjects), skipped)
    write_json(args.summary, summary)


if __name__ == "__main__":
    run(main)
