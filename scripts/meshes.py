"""Surface meshes of one shard of segmentations: one PLY or STL file per subject and class, in
LPS millimetres (what 3D Slicer assumes; the header says SPACE=LPS)."""

import argparse

from cohortseg.cli import run
from cohortseg.meshes import subject_meshes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--subjects", nargs="+", required=True)
    parser.add_argument("--segmentations", nargs="+", required=True)
    parser.add_argument("--classes", nargs="+", required=True)
    parser.add_argument(
        "--outputs", nargs="+", required=True, help="one per subject and class, subject-major"
    )
    parser.add_argument("--smoothing-iterations", type=int, required=True)
    args = parser.parse_args()
    n_classes = len(args.classes)
    if (
        not len(args.subjects) == len(args.segmentations)
        and len(args.outputs) == len(args.subjects) * n_classes
    ):
        parser.error("need one segmentation per subject and one output per subject and class")
    for k, (subject, seg) in enumerate(zip(args.subjects, args.segmentations, strict=True)):
        outputs = dict(
            zip(args.classes, args.outputs[k * n_classes : (k + 1) * n_classes], strict=True)
        )
        subject_meshes(subject, seg, args.classes, outputs, args.smoothing_iterations)


if __name__ == "__main__":
    run(main)
