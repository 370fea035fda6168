"""Sample patches from one preprocessed subject into its HDF5 patch store."""

import argparse
import zlib

import numpy as np

from cohortseg.cli import json_arg, run
from cohortseg.io import load_nifti, read_json
from cohortseg.patches import write_store
from cohortseg.preprocess import spacing_of


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--subject", required=True)
    parser.add_argument("--image", required=True, help="preprocessed image NIfTI")
    parser.add_argument("--label", required=True, help="preprocessed label NIfTI")
    parser.add_argument("--plan", required=True)
    parser.add_argument("--patches", type=json_arg, required=True, help="patches config, JSON")
    parser.add_argument("--output", required=True, help="HDF5 store")
    args = parser.parse_args()
    cfg = args.patches
    image, affine = load_nifti(args.image, args.subject)
    label, _ = load_nifti(args.label, args.subject, dtype=np.uint8)
    write_store(
        args.output,
        args.subject,
        image,
        label,
        affine,
        spacing_of(affine).tolist(),
        read_json(args.plan),
        n_patches=int(cfg["per_subject"]),
        foreground_fraction=float(cfg["foreground_fraction"]),
        compression=cfg["compression"],
        compression_level=int(cfg["compression_level"]),
        # a per-subject seed that does not depend on the subject's position in the cohort
        seed=int(cfg["seed"]) * 2**32 + zlib.crc32(args.subject.encode()),
    )


if __name__ == "__main__":
    run(main)
