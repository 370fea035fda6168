"""Surface meshes of one inference shard's segmentations: one PLY or STL file per subject and
class, in LPS millimetres (what 3D Slicer assumes; the header says SPACE=LPS), then the shard's
mesh manifest."""

import argparse

from cohortseg.core.io import read_tsv, write_manifest
from cohortseg.evaluation.meshes import subject_meshes
from cohortseg.workflow.cli import run
from cohortseg.workflow.paths import mesh_paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--segmented", required=True, help="the shard's inference manifest")
    parser.add_argument("--classes", nargs="+", required=True)
    parser.add_argument("--format", choices=("ply", "stl"), required=True)
    parser.add_argument("--manifest", required=True, help="the shard's mesh manifest (TSV)")
    parser.add_argument("--smoothing-iterations", type=int, required=True)
    args = parser.parse_args()
    rows = []
    for row in read_tsv(args.segmented):
        subject = row["subject"]
        outputs = dict(
            zip(args.classes, mesh_paths(subject, args.classes, args.format), strict=True)
        )
        subject_meshes(
            subject, row["segmentation"], args.classes, outputs, args.smoothing_iterations
        )
        rows += [{"subject": subject, "class": c, "mesh": path} for c, path in outputs.items()]
    write_manifest(args.manifest, rows, ["subject", "class", "mesh"], "mesh")


if __name__ == "__main__":
    run(main)
