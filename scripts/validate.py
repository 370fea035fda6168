"""Validate the image and label files of one shard of subjects."""

import argparse

from cohortseg.inputs.convert import conversion_problems
from cohortseg.inputs.validate import validate_subjects, write_problems
from cohortseg.workflow.cli import add_shard_arguments, json_arg, run, shard_subjects
from cohortseg.workflow.paths import convert_manifest_path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    add_shard_arguments(parser)
    parser.add_argument("--validation", type=json_arg, required=True, help="validation config")
    parser.add_argument("--n-classes", type=int, required=True, help="classes incl. background")
    parser.add_argument("--output", required=True, help="TSV of problems")
    args = parser.parse_args()
    subjects = shard_subjects(args, "validate")
    known = conversion_problems(convert_manifest_path(args.shard))
    problems = validate_subjects(subjects, args.validation, args.n_classes, known)
    write_problems(args.output, problems)


if __name__ == "__main__":
    run(main)
