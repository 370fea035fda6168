"""Keep the model this run trained as a version (results/models/v{N}/: checkpoint, training log,
lineage, and the model as a MONAI bundle in bundle/) unless it is kept already, and write which
version is current (results/models/current.json): the one model_version names, else the newest
trained."""

import argparse
import logging

from cohortseg.inference.bundle.export import export_bundle, is_complete
from cohortseg.workflow.cli import json_arg, run
from cohortseg.workflow.registry import (
    register_version,
    set_current,
    version_checkpoint,
    version_dir,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model-dir", required=True, help="results/model (best.pt, log)")
    parser.add_argument("--parent", type=int, help="the version it was fine-tuned from")
    parser.add_argument("--training-subjects-hash", required=True)
    parser.add_argument("--config", type=json_arg, required=True, help="its config (JSON)")
    parser.add_argument("--model-version", type=int, help="model_version: the current one")
    parser.add_argument("--models-dir", required=True, help="results/models")
    args = parser.parse_args()
    n = register_version(
        args.model_dir, args.parent, args.training_subjects_hash, args.config, args.models_dir
    )
    logging.getLogger("cohortseg").info("trained model: version v%d", n)
    bundle = version_dir(n, args.models_dir) / "bundle"
    if not is_complete(bundle):  # new, or exported before bundles carried all their files
        export_bundle(
            version_checkpoint(n, args.models_dir),
            bundle,
            args.config["inference"],
            version=f"{n}.0.0",
            description=f"cohortseg model version v{n} (parent: v{args.parent})"
            if args.parent
            else f"cohortseg model version v{n}, trained from scratch",
            training=args.config["training"],
        )
    if args.model_version is not None:
        set_current(args.model_version, args.models_dir)
        logging.getLogger("cohortseg").info("current: v%d (model_version)", args.model_version)


if __name__ == "__main__":
    run(main)
