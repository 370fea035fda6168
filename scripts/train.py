"""Train the segmentation network on the patch stores.

With ``training.backend: federated`` it starts a Flower federation on this machine (a
SuperLink and one SuperNode per site of the sample sheet) and runs ``federated.rounds`` rounds.
Otherwise every rank runs this same command: ``python scripts/train.py ...`` for
``training.backend`` ``single``; under ``torchrun --nproc-per-node N`` or ``srun --ntasks N``
for ``ddp``; under ``horovodrun --gloo -np N -H host:N`` for ``horovod``. If ``last.pt`` in the
checkpoint directory belongs to the same run, training resumes from it.

Exit status: 0 when training finished, 1 for a configuration or input error, 75 when SIGTERM or
SIGUSR1 stopped training after a checkpoint was written (run the same command again to
resume).
"""

import argparse
import sys

from cohortseg.core.cohort import read_subjects
from cohortseg.core.io import read_json
from cohortseg.federated.deployment import train_federated
from cohortseg.training.checkpoints import EXIT_INTERRUPTED, TrainingInterrupted
from cohortseg.training.loop import train
from cohortseg.workflow.cli import json_arg, run
from cohortseg.workflow.cohort import training_inputs, workflow_cohort


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--plan", required=True)
    inputs = parser.add_mutually_exclusive_group(required=True)
    inputs.add_argument(
        "--cohort",
        type=json_arg,
        help="cohort config (JSON): stores and validation subjects from the shard manifests",
    )
    inputs.add_argument("--stores", nargs="+", help="HDF5 patch stores (with --val)")
    parser.add_argument(
        "--val",
        help="with --stores: a TSV of preprocessed validation subjects "
        "(subject, split, image, label), as the preprocessing manifests list them",
    )
    parser.add_argument(
        "--config",
        type=json_arg,
        required=True,
        help="JSON with the model, training and inference config sections, complete "
        "(as config.yaml and its schema make them)",
    )
    parser.add_argument("--out-dir", required=True)
    parser.add_argument(
        "--checkpoint-dir",
        help="where last.pt is kept while training and resumed from (default: --out-dir); "
        "emptied of it when training has finished",
    )
    parser.add_argument(
        "--init-from",
        help="a checkpoint to fine-tune (training.init_from): its network and weights, "
        "training.fine_tuning's epochs and learning rate",
    )
    args = parser.parse_args()
    if args.cohort is not None:
        stores, val = training_inputs(args.cohort)
    elif args.val is None:
        parser.error("--stores needs --val")
    else:
        stores, val = args.stores, read_subjects(args.val)
    if args.config["training"]["backend"] == "federated":
        if args.cohort is None:
            parser.error("training.backend federated needs --cohort")
        train_federated(
            args.config,
            args.plan,
            workflow_cohort(args.cohort),
            stores,
            val,
            args.out_dir,
            args.checkpoint_dir or args.out_dir,
        )
        return
    try:
        train(
            args.config,
            read_json(args.plan),
            stores,
            val,
            args.out_dir,
            checkpoint_dir=args.checkpoint_dir,
            init_from=args.init_from,
        )
    except TrainingInterrupted:  # logged by train(); the checkpoint is written
        sys.exit(EXIT_INTERRUPTED)


if __name__ == "__main__":
    run(main)
