"""Evaluate one shard of segmentations: Dice, HD95 and class volumes per subject."""

import argparse

from cohortseg.cli import add_subjects_argument, run
from cohortseg.io import write_tsv
from cohortseg.metrics import evaluate_subject, metric_columns


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    add_subjects_argument(parser, '"subject", "split", "segmentation", "label"')
    parser.add_argument("--classes", nargs="+", required=True)
    parser.add_argument("--output", required=True, help="TSV, one row per subject")
    args = parser.parse_args()
    rows = [
        evaluate_subject(s["subject"], s["split"], s["segmentation"], s["label"], args.classes)
        for s in args.subjects
    ]
    write_tsv(args.output, rows, metric_columns(args.classes))


if __name__ == "__main__":
    run(main)
