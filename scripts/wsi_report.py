"""Join the slide shards: the statistics table (tissue and class areas in mm², Dice where
labelled), the table of bad slides (one line each, with stage, file and reason) and the QC
report page with each slide's overview."""

import argparse

from cohortseg.core.io import read_tsv, write_text, write_tsv
from cohortseg.workflow.cli import run
from cohortseg.wsi.report import slide_report_html
from cohortseg.wsi.stages import PROBLEM_COLUMNS


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tables", nargs="+", required=True, help="every shard table")
    parser.add_argument("--inference", nargs="+", required=True, help="inference shard tables")
    parser.add_argument("--stats", required=True, help="output TSV of slide statistics")
    parser.add_argument("--invalid", required=True, help="output TSV of bad slides")
    parser.add_argument("--report", required=True, help="output HTML page")
    args = parser.parse_args()
    problems = [r for t in args.tables for r in read_tsv(t) if r.get("problem")]
    rows = [r for t in args.inference for r in read_tsv(t) if not r.get("problem")]
    skip = {"sha256", *PROBLEM_COLUMNS[1:]}
    columns = [c for c in (rows[0] if rows else {"subject": ""}) if c not in skip]
    write_tsv(args.stats, rows, columns)
    write_tsv(args.invalid, problems, PROBLEM_COLUMNS)
    shown = [c for c in columns if c not in ("segmentation", "overview")]
    write_text(args.report, slide_report_html(rows, problems, shown, args.report))


if __name__ == "__main__":
    run(main)
