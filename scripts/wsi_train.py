"""Train the 2D slide network on every training slide's patch store (the stores the patch
manifests list) with the one trainer, validating on the val slides (those the tissue tables
list): ``best.pt`` (the slide model), ``last.pt``, ``training_log.tsv`` and
``learning_curve.png`` in ``--out-dir``. Every rank of ``wsi.training.backend`` runs this same
command (under torchrun or horovodrun for ddp and horovod). While training, ``last.pt`` is kept
in ``--checkpoint-dir``; if it belongs to the same run, training resumes from it.

Exit status: 0 when training finished, 1 for a configuration or input error, 75 when SIGTERM or
SIGUSR1 stopped training after a checkpoint was written (run the same command again to
resume).
"""

import argparse
import sys

from cohortseg.core.errors import CohortsegError
from cohortseg.core.io import read_tsv
from cohortseg.training.checkpoints import EXIT_INTERRUPTED, TrainingInterrupted
from cohortseg.workflow.cli import json_arg, run
from cohortseg.wsi.cohort import load_slides
from cohortseg.wsi.training import (
    SlideValidation,
    slide_training_plan,
    train_slide_model,
    validation_slides,
)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--wsi", type=json_arg, required=True, help="the wsi config (JSON)")
    parser.add_argument("--privacy", type=json_arg, required=True, help="privacy config, JSON")
    parser.add_argument("--manifests", nargs="+", required=True, help="patch shard manifests")
    parser.add_argument("--tissue", nargs="+", required=True, help="tissue shard tables")
    parser.add_argument("--out-dir", required=True, help="where the model and its log go")
    parser.add_argument(
        "--checkpoint-dir",
        help="where last.pt is kept while training and resumed from (default: --out-dir); "
        "emptied of it when training has finished",
    )
    args = parser.parse_args()
    cfg = args.wsi
    rows = [r for m in args.manifests for r in read_tsv(m) if not r.get("problem")]
    if not rows:
        raise CohortsegError("no training slide gave patches: see results/wsi/patches/*.tsv")
    validation = SlideValidation(
        validation_slides(load_slides(cfg, args.privacy), args.tissue),
        pixel_size_um=cfg["pixel_size_um"],
        overlap=float(cfg["inference"]["overlap"]),
        sw_batch_size=int(cfg["inference"]["sw_batch_size"]),
        max_memory_mb=float(cfg["max_memory_mb"]),
    )
    plan = slide_training_plan(cfg["classes"], cfg["target_pixel_size_um"], cfg["patch_size"])
    config = {"model": cfg["model"], "training": cfg["training"]}
    stores = [r["store"] for r in rows]
    try:
        train_slide_model(config, plan, stores, validation, args.out_dir, args.checkpoint_dir)
    except TrainingInterrupted:  # logged by the trainer; the checkpoint is written
        sys.exit(EXIT_INTERRUPTED)


if __name__ == "__main__":
    run(main)
