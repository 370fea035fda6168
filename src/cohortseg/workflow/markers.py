"""Input tracking and rerun markers: which input files Snakemake tracks, what stands for the
others, and the markers that make an unsound finished shard job run again. Every function here
only reads (a ``stat``, a small manifest): planning, a dry run included, writes nothing. The one
writer, :func:`write_marker`, runs as a job (the ``rerun_marker`` rule)."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

from cohortseg.annotation.corrections import CORRECTED_LABELS
from cohortseg.core.io import read_tsv, write_text
from cohortseg.workflow.paths import CONVERTED_DIR

#: Where a stage's markers live, beside its shard tables: ``{folder}/.incomplete/{shard}.{digest}``.
MARKER_FOLDER = ".incomplete"


#: A manifest column with the byte size of the file of the row's ``file_column`` as written
#: (patch stores): a file of another size is damaged (cut short, overwritten).
BYTES_COLUMN = "bytes"


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
    """Those of ``paths`` that a rule makes (the demo cohort's files, checked corrections): the
    inputs a job must wait for. A real cohort's own files are not among them: see
    :func:`files_digest`."""
    present = [p for p in paths if p and not p.startswith(f"{CONVERTED_DIR}/")]
    return [p for p in present if demo or made_by_rule(p)]


def files_digest(paths: Iterable[str | None], demo: bool) -> str:
    """What stands, as a job's parameter, for the input files of a real cohort that no rule
    makes: a short SHA-256 of each file's path, size and modification time (``missing`` for
    one that is not there; the validator reports it with the subject).

    Snakemake reruns a job whose parameters changed, so replacing, editing or touching one
    subject's image reruns its shard, as an input file would, without making each of a large
    cohort's files an input of the DAG (planning 500,000 subjects then costs one ``stat`` per
    file instead of Snakemake's bookkeeping of half a million inputs). Empty when every file
    is made by a rule (:func:`made_by_rules`: those are inputs)."""
    own = [
        p
        for p in paths
        if p and not p.startswith(f"{CONVERTED_DIR}/") and not demo and not made_by_rule(p)
    ]
    if not own:
        return ""
    digest = hashlib.sha256()
    for path in own:
        try:
            st = os.stat(path)
            digest.update(f"{path}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        except OSError:
            digest.update(f"{path}\0missing\n".encode())
    return digest.hexdigest()[:16]


def unsound_files(manifest: str | os.PathLike[str], columns: Sequence[str]) -> list[str]:
    """The files a finished shard's ``manifest`` lists (in ``columns``) that are not as the job
    left them: missing, or, where the manifest records their size (:data:`BYTES_COLUMN`, for
    the file of its first column), of another size (a store cut short). One line each; none
    when the manifest is not there (the job has not run). The manifest, not the cohort, says
    what the job wrote: a subject it left out (invalid, ``on_invalid: skip``) is not missing."""
    if not os.path.exists(manifest):
        return []
    problems = []
    for row in read_tsv(manifest):
        for column in columns:
            path = row.get(column)
            if not path:
                continue
            try:
                size = os.path.getsize(path)
            except OSError:
                problems.append(f"{path}: missing\n")
                continue
            recorded = row.get(BYTES_COLUMN) if column == columns[0] else None
            if recorded and size != int(recorded):
                problems.append(f"{path}: damaged ({size} bytes, written as {recorded})\n")
    return problems


def _marker_digest(manifest: str | os.PathLike[str], problems: Sequence[str]) -> str:
    """A name for this one incident: the problems and the manifest's own size and time (a
    repaired shard rewrites its manifest, so the same file lost again is a new incident)."""
    st = os.stat(manifest)
    text = f"{manifest}\0{st.st_size}\0{st.st_mtime_ns}\n{''.join(problems)}"
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def standing_marker(folder: str | os.PathLike[str], shard: str) -> list[str]:
    """The shard's newest marker in ``folder`` (``{shard}.{digest}``, or ``{shard}``
    as earlier versions wrote them), or none: the input its job last ran with."""
    try:
        names = [n for n in os.listdir(folder) if n == shard or n.startswith(f"{shard}.")]
    except OSError:
        return []
    if not names:
        return []
    paths = [os.path.join(folder, n) for n in names]
    return [max(paths, key=lambda p: (os.stat(p).st_mtime_ns, p))]


def rerun_marker(
    manifest: str | os.PathLike[str], shard: str, columns: Sequence[str]
) -> tuple[list[str], str]:
    """The marker input of a shard job whose per-subject files are not declared outputs (its
    manifest is, so that every shard is a job of one rule), and why it is there.

    When a file the manifest lists is unsound (:func:`unsound_files`), the input is a new marker
    (``{folder}/.incomplete/{shard}.{digest}``, not yet there): the ``rerun_marker`` job writes
    it, so the shard job runs again after it. Otherwise the input is the marker the shard last
    ran with (:func:`standing_marker`), so the set of inputs does not change and nothing
    reruns. Nothing is written here: a dry run shows both jobs and leaves the files as they
    are.

    Returns
    -------
    inputs
        ``[marker]`` or ``[]``.
    reason
        The unsound files, one line each (empty when the marker is a standing one).
    """
    folder = os.path.join(os.path.dirname(manifest), MARKER_FOLDER)
    problems = unsound_files(manifest, columns)
    if problems:
        return [os.path.join(folder, f"{shard}.{_marker_digest(manifest, problems)}")], "".join(
            problems
        )
    return standing_marker(folder, shard), ""


def write_marker(
    marker: str | os.PathLike[str], reason: str, log_path: str | os.PathLike[str]
) -> None:
    """The ``rerun_marker`` job: write ``marker`` with the ``reason`` (the unsound files), and
    say so in ``log_path``."""
    write_text(marker, reason)
    write_text(log_path, f"{Path(marker).name}: the shard runs again for\n{reason}")
