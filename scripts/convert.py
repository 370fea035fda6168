"""Convert the DICOM inputs of one shard of subjects to NIfTI (results/converted/), writing the
shard's conversion manifest last; a subject whose series cannot be converted is recorded there
as a validation problem (in pseudonymised runs also a series with burned-in annotation)."""

import argparse

from cohortseg.inputs.convert import convert_subject, write_conversions
from cohortseg.workflow.cli import add_shard_arguments, json_arg, run
from cohortseg.workflow.cohort import job_subjects, workflow_cohort


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    add_shard_arguments(parser)
    parser.add_argument("--dicom", type=json_arg, required=True, help="the dicom config, JSON")
    parser.add_argument("--classes", nargs="+", required=True)
    parser.add_argument("--manifest", required=True, help="the shard's conversion manifest")
    args = parser.parse_args()
    cohort = workflow_cohort(args.cohort)
    rows = [
        convert_subject(
            cohort.source(s.subject),
            s,
            args.classes,
            args.dicom["series"],
            float(args.dicom["position_tolerance_mm"]),
            echo=args.dicom["echo"],
            refuse_burned_in=bool(args.cohort["privacy"]["pseudonymize"]),
        )
        for s in job_subjects(cohort, "convert", args.shard, "fail")
    ]
    write_conversions(args.manifest, rows)


if __name__ == "__main__":
    run(main)
