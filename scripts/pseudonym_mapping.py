"""Write the subject → pseudonym mapping (keep it away from shared results)."""

import argparse

from cohortseg.core.io import write_tsv
from cohortseg.workflow.cli import json_arg, run
from cohortseg.workflow.cohort import workflow_cohort


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cohort", type=json_arg, required=True, help="cohort config (JSON)")
    parser.add_argument("--output", required=True)
    args = parser.parse_args()
    cohort = workflow_cohort(args.cohort)
    rows = [
        {"subject": a.subject, "pseudonym": b.subject}
        for a, b in zip(cohort.sheet_subjects, cohort.subjects, strict=True)
    ]
    write_tsv(args.output, rows, ["subject", "pseudonym"])


if __name__ == "__main__":
    run(main)
