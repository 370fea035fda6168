"""The shard jobs that write DICOM objects for segmentations (``outputs.dicom_seg``: a SEG;
``outputs.rtstruct``: an RT Structure Set), each referencing its subject's source series, and
in pseudonymised runs the de-identified copy of that series beside it."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence

import numpy as np

from cohortseg.dicom.deidentify import write_deidentified_series
from cohortseg.dicom.identity import run_identities
from cohortseg.dicom.rtstruct import write_rtstruct
from cohortseg.dicom.seg import write_dicom_seg
from cohortseg.dicom.series import DicomSeriesError, choose_series

#: What each kind of output is written by (its manifest column is the kind's name).
WRITERS = {"dicom_seg": write_dicom_seg, "rtstruct": write_rtstruct}


def shard_dicom_exports(
    kind: str,
    cohort,
    privacy: Mapping,
    segmented: str | os.PathLike[str],
    classes: Sequence[str],
    dicom: Mapping,
    model: str | os.PathLike[str],
    manifest: str | os.PathLike[str],
    output_path: Callable[[str], str],
    source_folder: Callable[[str], str],
) -> None:
    """The ``dicom_seg`` or ``rtstruct`` (``kind``) shard job: one object (written to
    ``output_path(subject)``) for each segmentation that ``segmented`` (an inference manifest)
    lists of a subject whose image is a DICOM series, with the identity of ``dicom.seg_identity``
    (:mod:`cohortseg.dicom.identity`); where its UIDs are derived from the key, the
    de-identified source series into ``source_folder(subject)``. Then ``manifest`` (subject,
    ``kind``, source, SHA-256). ``cohort`` is the run's
    :class:`~cohortseg.workflow.cohort.WorkflowCohort`."""
    from cohortseg.core.cohort import is_dicom
    from cohortseg.core.colours import class_colour
    from cohortseg.core.errors import InvalidInputError
    from cohortseg.core.failures import for_each_subject
    from cohortseg.core.io import load_nifti, read_tsv, sha256_file, write_manifest

    write = WRITERS[kind]
    identities = run_identities(dicom["seg_identity"], dicom["deidentification"], privacy)
    model_id = sha256_file(model)[:16]
    colours = [class_colour(v) for v in range(1, len(classes) + 1)]
    options = {"properties": dicom["segment_properties"], "colours": colours, "model_id": model_id}
    if kind == "rtstruct":
        options["tolerance_mm"] = float(dicom["position_tolerance_mm"])
    rows = {r["subject"]: r for r in read_tsv(segmented)}
    subjects = [
        cohort.by_id[s] for s in rows if s in cohort.dicom and is_dicom(cohort.source(s).image)
    ]

    def one(subject):
        sid = subject.subject
        source = cohort.source(sid)
        identity = identities(sid)
        try:
            series, _ = choose_series(source.image, source.series or dicom["series"], dicom["echo"])
            labels, affine = load_nifti(rows[sid]["segmentation"], sid, np.uint8)
            out = output_path(sid)
            write(out, labels, affine, series, identity, classes, **options)
            row = {"subject": sid, kind: out, "source": ""}
            if identity.replaces_uids:
                row["source"] = source_folder(sid)
                write_deidentified_series(series.files, identity.deidentifier, row["source"])
        except DicomSeriesError as exc:
            raise InvalidInputError(sid, source.image, str(exc)) from None
        return row

    write_manifest(manifest, for_each_subject(subjects, one), ["subject", kind, "source"], kind)
