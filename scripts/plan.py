"""Fingerprint the training subjects and write the preprocessing plan."""

import argparse
import logging

from cohortseg.cli import json_arg, run
from cohortseg.io import write_json
from cohortseg.plan import fingerprint, make_plan
from cohortseg.workflow import excluded_subjects, workflow_cohort


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cohort", type=json_arg, required=True, help="cohort config (JSON)")
    parser.add_argument("--invalid", required=True, help="results/qc/invalid_subjects.tsv")
    parser.add_argument(
        "--config",
        type=json_arg,
        required=True,
        help="JSON with the plan, model and classes config sections",
    )
    parser.add_argument("--fingerprint", required=True, help="output JSON")
    parser.add_argument("--plan", required=True, help="output JSON")
    args = parser.parse_args()
    invalid = excluded_subjects(args.invalid, args.cohort["validation"]["on_invalid"])
    cohort = workflow_cohort(args.cohort)
    subjects = [s for s in cohort.subjects if s.split == "train" and s.subject not in invalid]
    logging.getLogger("cohortseg").info("plan from %d training subject(s)", len(subjects))
    fp = fingerprint(subjects)
    write_json(args.fingerprint, fp)
    write_json(args.plan, make_plan(fp, args.config))


if __name__ == "__main__":
    run(main)
