"""Fingerprint the training subjects and write the preprocessing plan (when fine-tuning a kept
model, training.init_from, that model's plan, and corrected subjects are left out). Given the
sites' fingerprints (training.backend: federated), the plan is made from their merge and no
image is opened."""

import argparse
import logging
from pathlib import Path

from cohortseg.cli import json_arg, run
from cohortseg.io import read_json, write_json
from cohortseg.models import read_checkpoint
from cohortseg.plan import fingerprint, make_plan
from cohortseg.sitefingerprint import merge_fingerprints
from cohortseg.versions import resolve_init_from, training_subjects_hash
from cohortseg.workflow import excluded_subjects, plan_subjects, workflow_cohort


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cohort", type=json_arg, required=True, help="cohort config (JSON)")
    parser.add_argument("--invalid", required=True, help="results/qc/invalid_subjects.tsv")
    parser.add_argument(
        "--config",
        type=json_arg,
        required=True,
        help="JSON with the plan, model and classes config sections and training.init_from "
        "as init_from",
    )
    parser.add_argument(
        "--site-fingerprints",
        nargs="*",
        default=[],
        help="the sites' fingerprints (results/sites/{site}/fingerprint.json) to merge instead"
        " of fingerprinting the subjects here",
    )
    parser.add_argument("--fingerprint", required=True, help="output JSON")
    parser.add_argument("--plan", required=True, help="output JSON")
    args = parser.parse_args()
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
        # named by their site: results/sites/{site}/fingerprint.json
        fp = merge_fingerprints({Path(p).parent.name: read_json(p) for p in args.site_fingerprints})
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
