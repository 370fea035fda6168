"""At a site of a federation: its SuperNode inputs (patch stores' list, preprocessed
validation subjects, training config, plan) in results/sites/{site}/federated/, and
supernode.sh, the command that starts its SuperNode (cohortseg.federated.deployment)."""

import argparse
import logging

from cohortseg.federated.deployment import write_site_supernode
from cohortseg.workflow.cli import json_arg, run
from cohortseg.workflow.cohort import training_inputs, workflow_cohort


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cohort", type=json_arg, required=True, help="cohort config (JSON)")
    parser.add_argument("--site", required=True, help="the site (the sheet's site column)")
    parser.add_argument(
        "--config", type=json_arg, required=True, help="the training job's config (JSON)"
    )
    parser.add_argument("--plan", required=True, help="the plan the site's stores follow")
    args = parser.parse_args()
    cohort = workflow_cohort(args.cohort)
    stores, val = training_inputs(cohort, site=args.site)
    script = write_site_supernode(cohort, args.site, stores, val, args.config, args.plan)
    logging.getLogger("cohortseg").info(
        "site %s: %d patch store(s), %d validation subject(s); start its SuperNode with %s",
        args.site,
        len(stores),
        len(val),
        script,
    )


if __name__ == "__main__":
    run(main)
