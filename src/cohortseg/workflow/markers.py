"""Input tracking and rerun markers: which input files Snakemake tracks, and the markers that
make an unsound finished job run again."""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path

from cohortseg.annotation.corrections import CORRECTED_LABELS
from cohortseg.core.io import read_tsv
from cohortseg.workflow.paths import CONVERTED_DIR


def tracked(paths: Iterable[str | None], demo: bool) -> list[str]:
    """The input files Snakemake should track: all of them for the demo cohort (a rule makes
    them), else those that exist, so that a missing file reaches the validator, which reports
    it with the subject, instead of stopping the whole DAG. Files that ``convert`` makes from
    DICOM are not among them: its shard's manifest stands for them."""
    present = [p for p in paths if p and not p.startswith(f"{CONVERTED_DIR}/")]
    return present if demo else [p for p in present if os.path.exists(p) or made_by_rule(p)]


def made_by_rule(path: str) -> bool:
    """Whether a rule makes ``path`` in any cohort: a checked correction from review."""
    return path.startswith(f"{CORRECTED_LABELS}/")


def made_by_rules(paths: Iterable[str | None], demo: bool) -> list[str]:
    """Those of ``paths`` that a rule makes (the demo cohort's files), for rules that read
    input files without needing Snakemake to track them."""
    present = [p for p in paths if p and not p.startswith(f"{CONVERTED_DIR}/")]
    return [p for p in present if demo or made_by_rule(p)]


def rerun_marker(marker: str | os.PathLike[str], reason: str) -> list[str]:
    """An extra input that makes a job run again when its output is there but not sound.

    With a ``reason`` (text), ``marker`` is written with it, newer than the job's output, so
    Snakemake sees the job as outdated. Once written, the marker stays an input (older than the
    new output), so the set of inputs does not change again. Returns ``[marker]`` if it exists,
    else []. Markers are written while the DAG is built, so a dry run writes them too.
    """
    path = Path(marker)
    if reason:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(reason)
    return [str(path)] if path.exists() else []


def missing_files_marker(
    manifest: str | os.PathLike[str], marker: str | os.PathLike[str], columns: Sequence[str]
) -> list[str]:
    """:func:`rerun_marker` for a shard job whose per-subject files are not declared outputs
    (its manifest is, so that every shard is a job of one rule): when ``manifest`` exists but a
    file it lists in one of ``columns`` does not, the marker lists the missing files and the
    shard runs again. The manifest, not the cohort, says what the job wrote: a subject that it
    left out (invalid, ``on_invalid: skip``) is not missing."""
    missing = []
    if os.path.exists(manifest):
        rows = read_tsv(manifest)
        missing = [r[c] for r in rows for c in columns if r.get(c) and not os.path.exists(r[c])]
    return rerun_marker(marker, "".join(f"{path}\n" for path in missing))
