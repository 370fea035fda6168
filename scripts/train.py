"""Train the segmentation network on the patch stores.

Every rank runs this same command: ``python scripts/train.py ...`` for ``training.backend``
``single``; under ``torchrun --nproc-per-node N`` or ``srun --ntasks N`` for ``ddp``; under
``horovodrun --gloo -np N -H host:N`` for ``horovod``. If ``last.pt`` in the checkpoint
directory belongs to the same run, training resumes from it.

Exit status: 0 when training finished, 1 for a configuration or input error, 75 when SIGTERM or
SIGUSR1 stopped training after a checkpoint was written (run the same command again to
resume).
"""

import argparse
import sys

from cohortseg.cli import json_arg, run
from cohortseg.io import read_json
from cohortseg.train import EXIT_INTERRUPTED, TrainingInterrupted, ValidationSubject, train


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
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
    parser.add_argument(
        "--checkpoint-dir",
        help="where last.pt is kept while training and resumed from (default: --out-dir); "
        "emptied of it when training has finished",
    )
    args = parser.parse_args()
    val = [ValidationSubject(v["subject"], v["image"], v["label"]) for v in args.val]
    try:
        train(
            args.config,
            read_json(args.plan),
            args.stores,
            val,
            args.out_dir,
            checkpoint_dir=args.checkpoint_dir,
        )
    except TrainingInterrupted:  # logged by train(); the checkpoint is written
        sys.exit(EXIT_INTERRUPTED)


if __name__ == "__main__":
    run(main)
