"""Per-subject statistics of one shard of segmentations: volume, surface, components, box."""

import argparse

from cohortseg.cli import add_subjects_argument, run
from cohortseg.io import write_tsv
from cohortseg.stats import stats_columns, subject_statistics


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    add_subjects_argument(parser, '"subject", "split", "segmentation", "image"')
    parser.add_argument("--classes", nargs="+", required=True)
    parser.add_argument("--output", required=True, help="TSV, one row per subject")
    args = parser.parse_args()
    rows = [
        subject_statistics(s["subject"], s["split"], s["segmentation"], s["image"], args.classes)
        for s in args.subjects
    ]
    write_tsv(args.output, rows, stats_columns(args.classes, with_outliers=False))


if __name__ == "__main__":
    run(main)
