"""Join the shards' metrics into results/metrics.tsv and write the cohort summary."""

import argparse

from cohortseg.core.io import read_tsv, write_json, write_tsv
from cohortseg.evaluation.metrics import metric_columns, summarise
from cohortseg.inputs.validate import read_problems
from cohortseg.workflow.cli import json_arg, run
from cohortseg.workflow.cohort import stage_outputs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cohort", type=json_arg, required=True, help="cohort config (JSON)")
    parser.add_argument("--classes", nargs="+", required=True)
    parser.add_argument("--metrics", required=True, help="output TSV")
    parser.add_argument("--summary", required=True, help="output JSON")
    parser.add_argument("--invalid", required=True, help="results/qc/invalid_subjects.tsv")
    args = parser.parse_args()
    rows = [row for path in stage_outputs(args.cohort, "evaluate") for row in read_tsv(path)]
    write_tsv(args.metrics, rows, metric_columns(args.classes))
    summary = summarise(rows, args.classes)
    problems = read_problems(args.invalid)
    summary["n_segmented"] = len(rows)
    summary["invalid_subjects"] = sorted({p.subject for p in problems})
    summary["problems"] = [str(p) for p in problems]
    write_json(args.summary, summary)


if __name__ == "__main__":
    run(main)
