"""Train the segmentation network on the patch stores."""

import argparse

from cohortseg.cli import json_arg, run
from cohortseg.io import read_json
from cohortseg.train import ValidationSubject, train


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--plan", required=True)
    parser.add_argument("--stores", nargs="+", required=True, help="HDF5 patch stores")
    parser.add_argument(
        "--val",
        type=json_arg,
        required=True,
        help='JSON list of preprocessed {"subject", "image", "label"}',
    )
    parser.add_argument(
        "--config",
        type=json_arg,
        required=True,
        help="JSON with the model, training and inference config sections",
    )
    parser.add_argument("--out-dir", required=True)
    args = parser.parse_args()
    val = [ValidationSubject(v["subject"], v["image"], v["label"]) for v in args.val]
    train(args.config, read_json(args.plan), args.stores, val, args.out_dir)


if __name__ == "__main__":
    run(main)
