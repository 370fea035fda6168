"""Whom the DICOM objects cohortseg writes for a subject name (``dicom.seg_identity``), and
what of the source's headers they carry.

``source`` (only in runs that are not pseudonymised): the objects copy the source's patient and
study modules (PatientName, PatientID, birth date, sex, StudyInstanceUID, AccessionNumber,
StudyID, dates…), so that a PACS files them with their study. ``pseudonym``: every header they
carry is de-identified (:mod:`cohortseg.dicom.deidentify`), the patient named by the subject id
of the results (the pseudonym in pseudonymised runs, whose UIDs are derived from the key); in
pseudonymised runs the de-identified source series is written beside them, so that their
references resolve.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING

from cohortseg.core.errors import CohortsegError

if TYPE_CHECKING:  # pydicom and the profile only where objects are written: the Snakefile
    # checks dicom.seg_identity at start-up (check_seg_identity) and stays light to parse
    from pydicom.dataset import Dataset

    from cohortseg.dicom.deidentify import DeidentificationOptions, Deidentifier

#: The values of ``dicom.seg_identity``.
SEG_IDENTITIES = ("source", "pseudonym")


def check_seg_identity(seg_identity: str, pseudonymize: bool) -> None:
    """Refuse ``source`` in a pseudonymised run (it would name the patient in results/)."""
    if seg_identity not in SEG_IDENTITIES:
        raise CohortsegError(
            f"dicom.seg_identity is {seg_identity!r}; it must be one of {', '.join(SEG_IDENTITIES)}"
        )
    if seg_identity == "source" and pseudonymize:
        raise CohortsegError(
            "dicom.seg_identity: source copies the source's patient and study (name, ID,"
            " StudyInstanceUID, accession number) into every SEG and RTSTRUCT, which a"
            " pseudonymised run (privacy.pseudonymize: true) must not: set dicom.seg_identity:"
            " pseudonym (the objects then name the pseudonym and reference a de-identified copy"
            " of the source series written beside them), or run without pseudonymisation"
        )


@dataclass(frozen=True)
class Identity:
    """The identity one subject's DICOM outputs carry.

    Attributes
    ----------
    subject
        The subject id of the results (the pseudonym in pseudonymised runs).
    seg_identity
        ``source`` or ``pseudonym`` (see the module).
    key
        The pseudonymisation key in pseudonymised runs, else ``None``.
    options
        The de-identification options (``pseudonym`` only; ``None``: the defaults).
    """

    subject: str
    seg_identity: str = "pseudonym"
    key: bytes | None = field(default=None, repr=False)
    options: DeidentificationOptions | None = None

    def __post_init__(self) -> None:
        check_seg_identity(self.seg_identity, self.key is not None)

    @cached_property
    def deidentifier(self) -> Deidentifier | None:
        """The profile applied (``None`` for ``source``)."""
        from cohortseg.dicom.deidentify import DeidentificationOptions, Deidentifier

        if self.seg_identity == "source":
            return None
        return Deidentifier(self.subject, self.key, self.options or DeidentificationOptions())

    @property
    def replaces_uids(self) -> bool:
        """Whether the outputs' UIDs differ from the source's, so that the de-identified
        source series must be written beside them."""
        return self.deidentifier is not None and self.key is not None

    def header(self, source: Dataset) -> Dataset:
        """A source image's header as the outputs may carry and reference it (a copy), the
        Type 2 patient and study attributes present (empty where the source has none)."""
        import copy

        from cohortseg.dicom.deidentify import TYPE_2_PATIENT_STUDY

        deidentifier = self.deidentifier
        header = copy.copy(source) if deidentifier is None else deidentifier.dataset(source)
        for keyword in TYPE_2_PATIENT_STUDY:
            if keyword not in header:
                setattr(header, keyword, "")
        return header

    def created(self, header: Dataset) -> dict[str, str]:
        """Dates and times of an object made from ``header`` (as :meth:`header` returned it):
        for ``source`` none (the writer's clock); de-identified, the study's date and time as
        the profile left them (shifted, kept), or dummies, so that no date of processing
        reveals a date shift."""
        from cohortseg.dicom.deidentify import DUMMY

        if self.deidentifier is None:
            return {}
        day = str(header.get("StudyDate") or "") or DUMMY["DA"]
        time = str(header.get("StudyTime") or "") or DUMMY["TM"]
        return {"date": day, "time": time.split(".")[0]}

    def mark(self, ds: Dataset) -> None:
        """The de-identification attributes (PatientIdentityRemoved…), for ``pseudonym``."""
        if self.deidentifier is not None:
            self.deidentifier.mark(ds)


def run_identities(
    seg_identity: str, deidentification: Mapping, privacy: Mapping
) -> Callable[[str], Identity]:
    """The :class:`Identity` of each subject of a run, from ``dicom.seg_identity``,
    ``dicom.deidentification`` and the ``privacy`` section (its key loaded once)."""
    from cohortseg.core.pseudonyms import load_key
    from cohortseg.dicom.deidentify import DeidentificationOptions

    check_seg_identity(seg_identity, bool(privacy["pseudonymize"]))
    key = load_key(privacy) if privacy["pseudonymize"] else None
    options = DeidentificationOptions.from_config(deidentification)
    return lambda subject: Identity(subject, seg_identity, key, options)
