"""The review package: the subjects to correct (QC outliers, empty or failed segmentations, the
lowest Dice, review.subjects) with their image and predicted segmentation as a 3D Slicer
.seg.nrrd and as a MONAI Label datastore, and review.tsv saying why each was chosen."""

import argparse
from pathlib import Path

from cohortseg.annotation.review import select_review_subjects, write_review_package
from cohortseg.core.io import read_tsv
from cohortseg.workflow.cli import json_arg, run
from cohortseg.workflow.cohort import workflow_cohort
from cohortseg.workflow.paths import segmentation_path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--stats", required=True, help="results/stats.tsv")
    parser.add_argument("--metrics", required=True, help="results/metrics.tsv")
    parser.add_argument("--classes", nargs="+", required=True)
    parser.add_argument("--review", type=json_arg, required=True, help="review config (JSON)")
    parser.add_argument("--cohort", type=json_arg, required=True, help="cohort config (JSON)")
    parser.add_argument("--table", required=True, help="review.tsv; the package goes beside it")
    parser.add_argument(
        "--corrections-dir", help="corrections.dir: where MONAI Label's submissions go (a link)"
    )
    args = parser.parse_args()
    selection = select_review_subjects(
        read_tsv(args.stats),
        read_tsv(args.metrics),
        args.classes,
        worst=args.review["worst"],
        subjects=args.review["subjects"],
    )
    images = {s.subject: s.image for s in workflow_cohort(args.cohort).subjects}
    segmentations = {r["subject"]: segmentation_path(r["subject"]) for r in selection}
    write_review_package(
        selection,
        images,
        segmentations,
        args.classes,
        Path(args.table).parent,
        corrections_dir=args.corrections_dir,
    )


if __name__ == "__main__":
    run(main)
