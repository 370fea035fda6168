"""What every command-line entry point shares: logging set-up and errors printed for people."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable

from cohortseg.core.cohort import Subject
from cohortseg.core.errors import CohortsegError


def run(main: Callable[[], None]) -> None:
    """Call ``main`` with logging to stderr; a ``CohortsegError`` becomes one clear message and
    exit status 1 instead of a traceback."""
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        main()
    except CohortsegError as exc:
        logging.getLogger("cohortseg").error("%s", exc)
        print(f"cohortseg error: {exc}", file=sys.stderr)
        sys.exit(1)


def json_arg(text: str) -> object:
    """argparse type: a JSON value given on the command line."""
    return json.loads(text)


def add_shard_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``--cohort`` (the config sections of :func:`cohortseg.workflow.config.cohort_config`, as
    JSON) and ``--shard`` (a shard id): a shard job finds its subjects itself, so its command
    line stays a few hundred bytes whatever the cohort's or the shard's size."""
    parser.add_argument("--cohort", type=json_arg, required=True, help="cohort config (JSON)")
    parser.add_argument("--shard", required=True, help="shard id, e.g. 00003")


def shard_subjects(args: argparse.Namespace, stage: str) -> list[Subject]:
    """The subjects of ``args.shard`` that ``stage`` works on (see
    :func:`cohortseg.workflow.cohort.job_subjects`)."""
    from cohortseg.workflow.cohort import job_subjects, workflow_cohort

    cohort = workflow_cohort(args.cohort)
    on_invalid = args.cohort["validation"]["on_invalid"]
    subjects = job_subjects(cohort, stage, args.shard, on_invalid)
    logging.getLogger("cohortseg").info("shard %s: %d subject(s)", args.shard, len(subjects))
    return subjects
