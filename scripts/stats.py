"""Per-subject statistics of one inference shard's segmentations: volume, surface, components,
world box, and the uncertainty scores that inference wrote."""

import argparse

from cohortseg.core.io import read_tsv, write_tsv
from cohortseg.evaluation.stats import stats_columns, subject_statistics
from cohortseg.inference.uncertainty import uncertainty_columns
from cohortseg.workflow.cli import add_shard_arguments, run
from cohortseg.workflow.cohort import workflow_cohort


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    add_shard_arguments(parser)
    parser.add_argument("--segmented", required=True, help="the shard's inference manifest")
    parser.add_argument("--uncertainty", required=True, help="the shard's uncertainty table")
    parser.add_argument("--classes", nargs="+", required=True)
    parser.add_argument("--output", required=True, help="TSV, one row per subject")
    args = parser.parse_args()
    by_id = workflow_cohort(args.cohort).by_id
    scores = {r["subject"]: r for r in read_tsv(args.uncertainty)}
    rows = [
        subject_statistics(
            row["subject"],
            by_id[row["subject"]].split,
            row["segmentation"],
            by_id[row["subject"]].image,
            args.classes,
        )
        | {col: scores[row["subject"]][col] for col in uncertainty_columns(args.classes)}
        for row in read_tsv(args.segmented)
    ]
    write_tsv(args.output, rows, stats_columns(args.classes, with_outliers=False))


if __name__ == "__main__":
    run(main)
