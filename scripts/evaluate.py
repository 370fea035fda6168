"""Evaluate one inference shard's segmentations: Dice, HD95 and class volumes per subject."""

import argparse

from cohortseg.core.io import read_tsv, write_tsv
from cohortseg.evaluation.metrics import evaluate_subject, metric_columns
from cohortseg.workflow.cli import add_shard_arguments, run
from cohortseg.workflow.cohort import workflow_cohort


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    add_shard_arguments(parser)
    parser.add_argument("--segmented", required=True, help="the shard's inference manifest")
    parser.add_argument("--classes", nargs="+", required=True)
    parser.add_argument("--output", required=True, help="TSV, one row per subject")
    parser.add_argument(
        "--affine-tolerance-mm",
        type=float,
        required=True,
        help="validation.affine_tolerance_mm: how far (mm) a label may lie off its image's grid",
    )
    args = parser.parse_args()
    by_id = workflow_cohort(args.cohort).by_id
    rows = [
        evaluate_subject(
            row["subject"],
            by_id[row["subject"]].split,
            row["segmentation"],
            by_id[row["subject"]].label,
            args.classes,
            args.affine_tolerance_mm,
        )
        for row in read_tsv(args.segmented)
    ]
    write_tsv(args.output, rows, metric_columns(args.classes))


if __name__ == "__main__":
    run(main)
