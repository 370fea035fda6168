"""What every command-line entry point shares: logging set-up and errors printed for people."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable

from cohortseg.errors import CohortsegError


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


def add_subjects_argument(parser: argparse.ArgumentParser, keys: str) -> None:
    """Add ``--subjects``: a JSON list of one object per subject with ``keys`` (for the help)."""
    parser.add_argument("--subjects", type=json_arg, required=True, help=f"JSON list of {{{keys}}}")
