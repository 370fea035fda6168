"""Fingerprint the training subjects and write the preprocessing plan."""

import argparse

from cohortseg.cli import add_subjects_argument, json_arg, run
from cohortseg.cohort import Subject
from cohortseg.io import write_json
from cohortseg.plan import fingerprint, make_plan


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    add_subjects_argument(parser, '"subject", "image", "label"')
    parser.add_argument(
        "--config",
        type=json_arg,
        required=True,
        help="JSON with the plan, model and classes config sections",
    )
    parser.add_argument("--fingerprint", required=True, help="output JSON")
    parser.add_argument("--plan", required=True, help="output JSON")
    args = parser.parse_args()
    subjects = [Subject(s["subject"], s["image"], s["label"], "train") for s in args.subjects]
    fp = fingerprint(subjects)
    write_json(args.fingerprint, fp)
    write_json(args.plan, make_plan(fp, args.config))


if __name__ == "__main__":
    run(main)
