"""Let the workflow go on after validation, or stop it, as validation.on_invalid says."""

import argparse
import logging

from cohortseg.core.io import write_text
from cohortseg.inputs.validate import gate, read_problems
from cohortseg.workflow.cli import run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--table", required=True, help="results/qc/invalid_subjects.tsv")
    parser.add_argument("--on-invalid", choices=("fail", "skip"), required=True)
    parser.add_argument("--ok", required=True, help="marker written when the workflow may go on")
    args = parser.parse_args()
    message = gate(read_problems(args.table), args.on_invalid)
    logging.getLogger("cohortseg").info("%s", message)
    write_text(args.ok, message + "\n")


if __name__ == "__main__":
    run(main)
