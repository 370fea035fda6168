"""Synthesise one subject of the demo cohort."""

import argparse

from cohortseg.core.cohort import Subject
from cohortseg.inputs.demo import write_demo_subject
from cohortseg.workflow.cli import json_arg, run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--subject", required=True)
    parser.add_argument("--image", required=True, help="output image NIfTI")
    parser.add_argument("--label", required=True, help="output label NIfTI")
    parser.add_argument("--demo", type=json_arg, required=True, help="the demo config, JSON")
    args = parser.parse_args()
    write_demo_subject(Subject(args.subject, args.image, args.label, "train"), args.demo)


if __name__ == "__main__":
    run(main)
