"""Check a corrected label from review (a 3D Slicer .seg.nrrd, its segments mapped to classes by
name, or a NIfTI label map) against its image and write it as a NIfTI label map on the image's
grid: results/corrections/{subject}.nii.gz, the subject's label from now on."""

import argparse

import numpy as np

from cohortseg.annotation.corrections import read_correction
from cohortseg.core.io import save_nifti
from cohortseg.workflow.cli import run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--subject", required=True)
    parser.add_argument("--correction", required=True, help=".seg.nrrd, .nrrd, .nii.gz or .nii")
    parser.add_argument("--image", required=True, help="the subject's image (NIfTI)")
    parser.add_argument("--classes", nargs="+", required=True)
    parser.add_argument(
        "--affine-tolerance-mm", type=float, required=True, help="validation.affine_tolerance_mm"
    )
    parser.add_argument("--output", required=True, help="NIfTI label map")
    args = parser.parse_args()
    labels, affine = read_correction(
        args.subject, args.correction, args.image, args.classes, args.affine_tolerance_mm
    )
    save_nifti(args.output, labels, affine, dtype=np.uint8)


if __name__ == "__main__":
    run(main)
