"""Preprocess one labelled subject onto the plan's grid (image, label and geometry)."""

import argparse

import numpy as np

from cohortseg.cli import run
from cohortseg.io import load_nifti, read_json, save_nifti, write_json
from cohortseg.preprocess import prepare_image, prepare_label


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--subject", required=True)
    parser.add_argument("--image", required=True)
    parser.add_argument("--label", required=True)
    parser.add_argument("--plan", required=True)
    parser.add_argument("--out-image", required=True)
    parser.add_argument("--out-label", required=True)
    parser.add_argument("--out-geometry", required=True)
    args = parser.parse_args()
    plan = read_json(args.plan)
    data, affine = load_nifti(args.image, args.subject)
    label, _ = load_nifti(args.label, args.subject, dtype=np.uint8)
    image, geometry = prepare_image(data, affine, plan)
    grid_label = prepare_label(label, geometry)
    grid_affine = np.asarray(geometry.affine)
    save_nifti(args.out_image, image[0].numpy(), grid_affine, dtype=np.float32)
    save_nifti(args.out_label, grid_label[0].numpy(), grid_affine, dtype=np.uint8)
    write_json(args.out_geometry, geometry.to_dict())


if __name__ == "__main__":
    run(main)
