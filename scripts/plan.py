"""Fingerprint the training subjects and write the preprocessing plan (when fine-tuning a kept
model, training.init_from, that model's plan, and corrected subjects are left out). Given the
sites' fingerprints (training.backend: federated), the plan is made from their merge and no
image is opened; a federation's coordinator, which has no sample sheet, runs it without
--cohort:

    python scripts/plan.py --site-fingerprints north.json south.json --configfile fed.yaml \
        --fingerprint fingerprint.json --plan plan.json
"""

import argparse
import logging
from pathlib import Path

from cohortseg.core.errors import CohortsegError
from cohortseg.core.io import write_json
from cohortseg.networks.build import read_checkpoint
from cohortseg.preprocessing.plan import fingerprint, make_plan
from cohortseg.preprocessing.site_fingerprint import merge_fingerprints, read_site_fingerprints
from cohortseg.workflow.cli import json_arg, run
from cohortseg.workflow.cohort import excluded_subjects, plan_subjects, workflow_cohort
from cohortseg.workflow.config import coordinator_plan_config, load_yaml
from cohortseg.workflow.registry import resolve_init_from, training_subjects_hash


def coordinator_plan(fingerprints: list[str], config: dict, fingerprint: str, plan: str) -> None:
    """The plan of a federation's coordinator: merged from the sites' fingerprints alone."""
    logging.getLogger("cohortseg").info(
        "plan merged from %d site fingerprint(s), no sample sheet", len(fingerprints)
    )
    if config["init_from"] not in (None, "auto"):  # auto: no corrections here, from scratch
        raise CohortsegError(
            f"training.init_from: {config['init_from']}: a fine-tuned model keeps its parent's"
            " plan (the one in its checkpoint), there is nothing to merge"
        )
    merged = merge_fingerprints(read_site_fingerprints(fingerprints))
    write_json(fingerprint, merged)
    write_json(plan, make_plan(merged, config))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--cohort",
        type=json_arg,
        help="cohort config (JSON); absent at a coordinator: --site-fingerprints only",
    )
    parser.add_argument("--invalid", help="results/qc/invalid_subjects.tsv (with --cohort)")
    config = parser.add_mutually_exclusive_group(required=True)
    config.add_argument(
        "--config",
        type=json_arg,
        help="JSON with the plan, model and classes config sections and training.init_from "
        "as init_from",
    )
    config.add_argument(
        "--configfile",
        help="a coordinator's YAML config, over config.yaml's defaults (the file the sites"
        " run the workflow with)",
    )
    parser.add_argument(
        "--site-fingerprints",
        nargs="*",
        default=[],
        help="the sites' fingerprints (results/sites/{site}/fingerprint.json, or files named"
        " {site}.json) to merge instead of fingerprinting the subjects here",
    )
    parser.add_argument("--fingerprint", required=True, help="output JSON")
    parser.add_argument("--plan", required=True, help="output JSON")
    args = parser.parse_args()
    if args.configfile:
        defaults = load_yaml(Path(__file__).resolve().parents[1] / "config.yaml")
        args.config = coordinator_plan_config(defaults, load_yaml(args.configfile) or {})
    if args.cohort is None:
        if not args.site_fingerprints:
            parser.error("without --cohort, give the sites' fingerprints (--site-fingerprints)")
        coordinator_plan(args.site_fingerprints, args.config, args.fingerprint, args.plan)
        return
    if args.invalid is None:
        parser.error("--cohort needs --invalid")
    invalid = excluded_subjects(args.invalid, args.cohort["validation"]["on_invalid"])
    cohort = workflow_cohort(args.cohort)
    init_from = resolve_init_from(
        args.config["init_from"], training_subjects_hash(cohort.subjects), bool(cohort.corrections)
    )
    ids = set(plan_subjects(cohort, fine_tuning=init_from is not None)) - invalid
    subjects = [s for s in cohort.subjects if s.subject in ids]
    log = logging.getLogger("cohortseg")
    if args.site_fingerprints:
        log.info("plan merged from %d site fingerprint(s)", len(args.site_fingerprints))
        fp = merge_fingerprints(read_site_fingerprints(args.site_fingerprints))
    else:
        log.info("plan from %d training subject(s)", len(subjects))
        fp = fingerprint(subjects)
    write_json(args.fingerprint, fp)
    if init_from is None:
        write_json(args.plan, make_plan(fp, args.config))
    else:
        log.info("fine-tuning %s: its plan is kept", init_from)
        write_json(args.plan, read_checkpoint(init_from)["plan"])


if __name__ == "__main__":
    run(main)
