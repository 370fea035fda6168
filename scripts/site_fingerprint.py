"""A site's fingerprint of its training subjects for the federated plan: spacings, shapes and
intensity aggregates, no voxel and no subject id (cohortseg.preprocessing.site_fingerprint)."""

import argparse
import logging

from cohortseg.core.io import write_json
from cohortseg.preprocessing.site_fingerprint import site_fingerprint
from cohortseg.workflow.cli import json_arg, run
from cohortseg.workflow.cohort import (
    excluded_subjects,
    plan_subjects_by_site,
    workflow_cohort,
)
from cohortseg.workflow.registry import resolve_init_from, training_subjects_hash


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cohort", type=json_arg, required=True, help="cohort config (JSON)")
    parser.add_argument("--invalid", required=True, help="results/qc/invalid_subjects.tsv")
    parser.add_argument("--site", required=True, help="the site (the sheet's site column)")
    parser.add_argument(
        "--init-from", type=json_arg, required=True, help="training.init_from (JSON)"
    )
    parser.add_argument("--fingerprint", required=True, help="output JSON")
    args = parser.parse_args()
    invalid = excluded_subjects(args.invalid, args.cohort["validation"]["on_invalid"])
    cohort = workflow_cohort(args.cohort)
    init_from = resolve_init_from(
        args.init_from, training_subjects_hash(cohort.subjects), bool(cohort.corrections)
    )
    ids = plan_subjects_by_site(cohort, fine_tuning=init_from is not None).get(args.site, [])
    subjects = [cohort.by_id[s] for s in ids if s not in invalid]
    logging.getLogger("cohortseg").info(
        "site %s: fingerprint of %d training subject(s)", args.site, len(subjects)
    )
    write_json(args.fingerprint, site_fingerprint(subjects))


if __name__ == "__main__":
    run(main)
