"""QC montages: three orthogonal slices with the segmentation overlaid, for a deterministic
sample of subjects plus those with the worst Dice and the most unusual volumes."""

import argparse
from pathlib import Path

from cohortseg.core.io import read_tsv, write_json
from cohortseg.reporting.qc import select_qc_subjects, write_qc_montages
from cohortseg.workflow.cli import json_arg, run
from cohortseg.workflow.cohort import workflow_cohort


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--stats", required=True, help="results/stats.tsv")
    parser.add_argument("--metrics", required=True, help="results/metrics.tsv")
    parser.add_argument("--classes", nargs="+", required=True)
    parser.add_argument("--report", type=json_arg, required=True, help="report config (JSON)")
    parser.add_argument(
        "--cohort",
        type=json_arg,
        required=True,
        help="cohort config (JSON): where the images are",
    )
    parser.add_argument("--out-dir", required=True, help="{subject}.png and selection.json")
    args = parser.parse_args()
    stats = read_tsv(args.stats)
    cfg = args.report
    selection = select_qc_subjects(
        stats,
        read_tsv(args.metrics),
        args.classes,
        qc_sample=cfg["qc_sample"],
        qc_worst=cfg["qc_worst"],
        qc_unusual=cfg["qc_unusual"],
        seed=cfg["seed"],
    )
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    images = {s.subject: s.image for s in workflow_cohort(args.cohort).subjects}
    write_qc_montages(selection, stats, images, args.classes, out)
    write_json(
        out / "selection.json",
        {s["subject"]: {"split": s["split"], "why": s["why"]} for s in selection},
    )


if __name__ == "__main__":
    run(main)
