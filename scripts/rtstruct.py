"""Write each segmentation of one inference shard's DICOM subjects as an RT Structure Set (one
ROI per class) referencing its source series (results/rtstruct/; in pseudonymised runs with the
de-identified source series beside it), then the shard's manifest."""

import argparse

from cohortseg.dicom.exports import shard_dicom_exports
from cohortseg.workflow.cli import add_shard_arguments, json_arg, run
from cohortseg.workflow.cohort import workflow_cohort
from cohortseg.workflow.paths import rtstruct_path, rtstruct_source_folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    add_shard_arguments(parser)
    parser.add_argument("--dicom", type=json_arg, required=True, help="the dicom config, JSON")
    parser.add_argument("--classes", nargs="+", required=True)
    parser.add_argument("--segmented", required=True, help="the shard's inference manifest")
    parser.add_argument("--model", required=True, help="the model checkpoint (names the ROIs)")
    parser.add_argument("--manifest", required=True, help="the shard's RTSTRUCT manifest")
    args = parser.parse_args()
    shard_dicom_exports(
        "rtstruct",
        workflow_cohort(args.cohort),
        args.cohort["privacy"],
        args.segmented,
        args.classes,
        args.dicom,
        args.model,
        args.manifest,
        rtstruct_path,
        rtstruct_source_folder,
    )


if __name__ == "__main__":
    run(main)
