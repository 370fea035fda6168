"""Surface meshes of one shard of segmentations: one PLY or STL file per subject and class, in
LPS millimetres (what 3D Slicer assumes; the header says SPACE=LPS)."""

import argparse

from cohortseg.cli import run
from cohortseg.io import write_manifest
from cohortseg.meshes import subject_meshes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--subjects", nargs="+", required=True)
    parser.add_argument("--segmentations", nargs="+", required=True)
    parser.add_argument("--classes", nargs="+", required=True)
    parser.add_argument(
        "--outputs", nargs="+", required=True, help="one per subject and class, subject-major"
    )
    parser.add_argument("--manifest", required=True, help="the shard's mesh manifest (TSV)")
    parser.add_argument("--smoothing-iterations", type=int, required=True)
    args = parser.parse_args()
    n_classes = len(args.classes)
    if not (
        len(args.subjects) == len(args.segmentations)
        and len(args.outputs) == len(args.subjects) * n_classes
    ):
        parser.error("need one segmentation per subject and one output per subject and class")
    rows = []
    for k, (subject, seg) in enumerate(zip(args.subjects, args.segmentations, strict=True)):
        outputs = dict(
            zip(args.classes, args.outputs[k * n_classes : (k + 1) * n_classes], strict=True)
        )
        subject_meshes(subject, seg, args.classes, outputs, args.smoothing_iterations)
        rows += [{"subject": subject, "class": c, "mesh": path} for c, path in outputs.items()]
    write_manifest(args.manifest, rows, ["subject", "class", "mesh"], "mesh")


if __name__ == "__main__":
    run(main)
