"""Join the shards' validation tables into results/qc/invalid_subjects.tsv."""

import argparse

from cohortseg.inputs.validate import read_problems, write_problems
from cohortseg.workflow.cli import json_arg, run
from cohortseg.workflow.cohort import stage_outputs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cohort", type=json_arg, required=True, help="cohort config (JSON)")
    parser.add_argument("--output", required=True, help="the joined TSV")
    args = parser.parse_args()
    tables = stage_outputs(args.cohort, "validate")
    write_problems(args.output, [p for path in tables for p in read_problems(path)])


if __name__ == "__main__":
    run(main)
