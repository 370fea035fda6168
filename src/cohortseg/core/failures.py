"""A shard job's per-subject work: every subject is tried, a subject whose files are bad fails
alone, and the job ends by naming every failed subject at once."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import TypeVar

from cohortseg.core.cohort import Subject
from cohortseg.core.errors import CohortsegError, InvalidInputError

log = logging.getLogger(__name__)


Row = TypeVar("Row")


def check_shard(failures: Sequence[InvalidInputError]) -> None:
    """Raise one error naming every failed subject of a shard."""
    if failures:
        lines = "\n".join(str(f) for f in failures)
        raise CohortsegError(f"{len(failures)} subject(s) of this shard failed:\n{lines}")


def for_each_subject(subjects: Sequence[Subject], work: Callable[[Subject], Row]) -> list[Row]:
    """``work(subject)`` for every subject, in order, with one progress line each; returns the
    results of those that succeeded, then raises (:func:`check_shard`) if any subject's input
    was bad (``InvalidInputError``), so the others' files are written before the job fails."""
    rows, failures = [], []
    start = time.perf_counter()
    for k, subject in enumerate(subjects, start=1):
        try:
            rows.append(work(subject))
        except InvalidInputError as exc:
            log.error("%s", exc)
            failures.append(exc)
            continue
        elapsed = time.perf_counter() - start
        log.info("%s: done (%d/%d, %.1f s/subject)", subject.subject, k, len(subjects), elapsed / k)
    check_shard(failures)
    return rows
