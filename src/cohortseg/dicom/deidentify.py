"""De-identification as PS3.15 Annex E describes it: the Basic Application Level
Confidentiality Profile (the actions of Table E.1-1, :mod:`cohortseg.dicom.basic_profile`) with
the options a study states in config, applied to every header cohortseg writes from a DICOM
source; and the de-identified copy of a source series that a pseudonymised SEG or RTSTRUCT
references.

Beyond the table's rows: private attributes, curves (50xx) and overlays (60xx) are removed;
attributes the dictionary does not know are removed; a person name or a date the table does not
list gets the action of its kind (``Z``; dates as the table's dates); the file meta information
is written anew. Objects carry PatientIdentityRemoved ``YES``, DeidentificationMethod and
DeidentificationMethodCodeSequence (CID 7050) naming the profile and each option applied, and
LongitudinalTemporalInformationModified. A copy of an image whose BurnedInAnnotation is ``YES`` is
refused: the Clean Pixel Data Option is not implemented.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from functools import cached_property
from pathlib import Path

import pydicom
from pydicom.datadict import dictionary_has_tag
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import generate_uid

from cohortseg.core.errors import CohortsegError
from cohortseg.core.io import atomic_write
from cohortseg.dicom.basic_profile import TABLE_E1_1
from cohortseg.dicom.series import DicomSeriesError

#: CID 7050 codes (scheme DCM) of the profile and the options cohortseg implements.
CODES = {
    "basic": ("113100", "Basic Application Confidentiality Profile"),
    "clean_descriptors": ("113105", "Clean Descriptors Option"),
    "full_dates": ("113106", "Retain Longitudinal Temporal Information Full Dates Option"),
    "modified_dates": ("113107", "Retain Longitudinal Temporal Information Modified Dates Option"),
    "patient_characteristics": ("113108", "Retain Patient Characteristics Option"),
    "uids": ("113110", "Retain UIDs Option"),
}

#: Dates are shifted back by 1 to this many whole days (about ten years), per subject.
MAX_DATE_SHIFT_DAYS = 3652

#: Attributes the profile may empty or remove but that are Type 1 in the enhanced multi-frame
#: images cohortseg reads and writes: they get a dummy value (``D``) instead.
TYPE_1 = frozenset({0x00080023, 0x00080033, 0x0008002A})  # Content Date/Time, Acquisition DT

#: Dummy values (action ``D``) by value representation.
DUMMY = {
    "DA": "19000101",
    "TM": "000000",
    "DT": "19000101000000",
    "AS": "000Y",
    "IS": "0",
    "DS": "0",
}
DUMMY_TEXT = "ANONYMIZED"

STANDARD_UID_ROOT = "1.2.840.10008."

#: Type 2 attributes of the Patient and General Study modules: every object written has them.
TYPE_2_PATIENT_STUDY = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyDate",
    "StudyTime",
    "ReferringPhysicianName",
    "StudyID",
    "AccessionNumber",
)


@dataclass(frozen=True)
class DeidentificationOptions:
    """The options of Table E.1-1 a study needs (``dicom.deidentification`` in config).

    Attributes
    ----------
    retain_longitudinal_dates
        Keep dates, so that intervals between a subject's studies survive: shifted back by a
        whole number of days per subject, derived from the pseudonymisation key (Modified
        Dates Option), or, without a key (runs that are not pseudonymised), kept as they are
        (Full Dates Option). Times of day are kept. Otherwise dates and times are removed.
    retain_patient_characteristics
        Keep sex, age, size, weight, ethnic group, smoking and pregnancy status.
    safe_descriptors
        Regular expressions: a descriptor (SeriesDescription, StudyDescription, ProtocolName
        and the table's other descriptors) that one of them matches in full is kept (Clean
        Descriptors Option); any other is removed. Empty: every descriptor is removed.
    """

    retain_longitudinal_dates: bool = False
    retain_patient_characteristics: bool = False
    safe_descriptors: tuple[str, ...] = ()

    @classmethod
    def from_config(cls, section: Mapping) -> DeidentificationOptions:
        """From the ``dicom.deidentification`` section."""
        patterns = tuple(section["safe_descriptors"])
        for pattern in patterns:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise CohortsegError(
                    f"dicom.deidentification.safe_descriptors: {pattern!r} is not a regular"
                    f" expression ({exc})"
                ) from None
        return cls(
            bool(section["retain_longitudinal_dates"]),
            bool(section["retain_patient_characteristics"]),
            patterns,
        )


def derived_uid(uid: str, key: bytes) -> str:
    """A UID standing for ``uid`` in pseudonymised outputs: the same for the same key, and
    telling nothing of ``uid`` without it (``2.25.`` and a hash)."""
    return generate_uid(prefix="2.25.", entropy_srcs=[key.hex(), uid])


def date_shift_days(subject: str, key: bytes) -> int:
    """How many days a subject's dates move back (1 to :data:`MAX_DATE_SHIFT_DAYS`): the same
    for every object of the subject, secret without the key."""
    digest = hmac.new(key, f"cohortseg date shift\0{subject}".encode(), hashlib.sha256).digest()
    return 1 + int.from_bytes(digest[:8], "big") % MAX_DATE_SHIFT_DAYS


def _shift_date(value: str, days: int) -> str:
    """A DA value (``YYYYMMDD``) ``days`` earlier; a malformed date becomes the dummy."""
    try:
        day = date(int(value[:4]), int(value[4:6]), int(value[6:8]))
    except (ValueError, IndexError):
        return DUMMY["DA"]
    return (day - timedelta(days=days)).strftime("%Y%m%d")


@dataclass(frozen=True)
class Deidentifier:
    """The Basic Profile with options for one subject's objects.

    Attributes
    ----------
    subject
        The id the objects name the patient by (PatientName and PatientID): the pseudonym in
        pseudonymised runs, else the sample sheet's id.
    key
        The pseudonymisation key: UIDs are derived from it (:func:`derived_uid`) and dates
        shifted by it; ``None``: UIDs are kept (Retain UIDs Option).
    options
        The options a study states.
    """

    subject: str
    key: bytes | None
    options: DeidentificationOptions = DeidentificationOptions()

    @cached_property
    def shift_days(self) -> int | None:
        """Days dates move back; 0: kept as they are; ``None``: dates are removed."""
        if not self.options.retain_longitudinal_dates:
            return None
        return date_shift_days(self.subject, self.key) if self.key is not None else 0

    def codes(self) -> list[tuple[str, str]]:
        """(code value, meaning) of the profile and each option applied (CID 7050)."""
        names = ["basic"]
        if self.options.safe_descriptors:
            names.append("clean_descriptors")
        if self.shift_days is not None:
            names.append("modified_dates" if self.shift_days else "full_dates")
        if self.options.retain_patient_characteristics:
            names.append("patient_characteristics")
        if self.key is None:
            names.append("uids")
        return [CODES[n] for n in names]

    def uid(self, uid: str) -> str:
        """``uid`` as the objects of this subject carry it."""
        if self.key is None or not uid or uid.startswith(STANDARD_UID_ROOT):
            return uid
        return derived_uid(uid, self.key)

    def safe_descriptor(self, text: str) -> bool:
        """Whether a descriptor may stay (one of the safe patterns matches all of it)."""
        return any(re.fullmatch(p, text) for p in self.options.safe_descriptors)

    def date(self, value: str) -> str:
        """A DA value as the options leave it (``""``: removed)."""
        if self.shift_days is None or not value:
            return ""
        return _shift_date(value, self.shift_days) if self.shift_days else value

    def dataset(self, source: Dataset) -> Dataset:
        """A de-identified copy of ``source``'s attributes (file meta information left out;
        pixel data as they are: see :func:`write_deidentified_series` for images whose pixels
        may carry text), marked with :meth:`mark`, PatientName and PatientID set to
        :attr:`subject`."""
        out = Dataset()
        for elem in source:
            kept = self._element(elem)
            if kept is not None:
                out.add(kept)
        for keyword in TYPE_2_PATIENT_STUDY:  # present, as the objects' IODs want them
            if keyword not in out:
                setattr(out, keyword, "")
        out.PatientName = self.subject
        out.PatientID = self.subject
        self.mark(out)
        return out

    def mark(self, ds: Dataset) -> None:
        """PatientIdentityRemoved, the method (text and CID 7050 codes) and what became of
        longitudinal temporal information."""
        codes = self.codes()
        ds.PatientIdentityRemoved = "YES"
        ds.DeidentificationMethod = [meaning for _, meaning in codes]
        items = []
        for value, meaning in codes:
            item = Dataset()
            item.CodeValue = value
            item.CodingSchemeDesignator = "DCM"
            item.CodeMeaning = meaning
            items.append(item)
        ds.DeidentificationMethodCodeSequence = items
        shift = self.shift_days
        ds.LongitudinalTemporalInformationModified = (
            "REMOVED" if shift is None else "MODIFIED" if shift else "UNMODIFIED"
        )

    # -- the table's actions ------------------------------------------------------------

    def _element(self, elem: DataElement) -> DataElement | None:
        """What becomes of one element (``None``: removed)."""
        tag = elem.tag
        if tag.is_private or (tag.group & 0xFF00) in (0x5000, 0x6000):
            return None
        if not dictionary_has_tag(tag):
            return None
        rule = TABLE_E1_1.get(int(tag))
        if rule is None:
            if elem.VR == "PN":
                rule = ("Z", "")
            elif elem.VR in ("DA", "DT"):
                rule = ("X/Z", "L")
            elif elem.VR == "SQ":
                return self._sequence(elem)
            else:
                return elem
        action = self._action(int(tag), elem, *rule)
        if action == "K":
            return self._sequence(elem) if elem.VR == "SQ" else elem
        if action == "X":
            return None
        if action == "Z":
            return DataElement(tag, elem.VR, DicomSequence() if elem.VR == "SQ" else None)
        if action == "D":
            return self._dummy(elem)
        if action == "U":
            if elem.VR == "SQ":  # X/Z/U*: the references kept, their UIDs replaced
                return self._sequence(elem)
            return self._replaced_uids(elem)
        if action == "shift":
            return self._shifted(elem)
        raise AssertionError(action)  # pragma: no cover

    def _action(self, tag: int, elem: DataElement, basic: str, letters: str) -> str:
        """K, X, Z, D, U or shift, from the basic action and the options applied."""
        options = self.options
        if "U" in letters and self.key is None:
            return "K"
        if "L" in letters and self.shift_days is not None:
            return "K" if self.shift_days == 0 or elem.VR not in ("DA", "DT") else "shift"
        if "P" in letters and options.retain_patient_characteristics:
            return "K"
        if "C" in letters and elem.VR != "SQ" and elem.value not in (None, ""):
            if self.safe_descriptor(str(elem.value)):
                return "K"
        if basic == "X/Z/U*":
            return "U"
        if basic in ("U", "X", "Z", "D"):
            return basic
        if tag in TYPE_1 and "D" in basic:
            return "D"
        return "Z" if "Z" in basic else "X"

    def _sequence(self, elem: DataElement) -> DataElement:
        items = []
        for item in elem.value or []:
            clean = Dataset()
            for child in item:
                kept = self._element(child)
                if kept is not None:
                    clean.add(kept)
            items.append(clean)
        return DataElement(elem.tag, "SQ", DicomSequence(items))

    def _replaced_uids(self, elem: DataElement) -> DataElement:
        values = list(elem.value) if elem.VM > 1 else [elem.value]
        new = [self.uid(str(v)) for v in values if v]
        return DataElement(elem.tag, "UI", new if elem.VM > 1 else (new[0] if new else None))

    def _dummy(self, elem: DataElement) -> DataElement | None:
        if elem.VR == "SQ":
            return None
        if elem.VR == "UI":
            return self._replaced_uids(elem)
        if elem.VR in ("DA", "DT") and self.shift_days is not None:
            return self._shifted(elem)
        if elem.VR in DUMMY:
            return DataElement(elem.tag, elem.VR, DUMMY[elem.VR])
        if elem.VR in ("PN", "LO", "SH", "LT", "ST", "UT", "UC", "CS", "AE"):
            return DataElement(elem.tag, elem.VR, DUMMY_TEXT)
        return None

    def _shifted(self, elem: DataElement) -> DataElement:
        days = self.shift_days or 0
        values = elem.value if elem.VM > 1 else [elem.value]
        out = []
        for v in values:
            text = str(v) if v is not None else ""
            out.append(_shift_date(text[:8], days) + text[8:] if text else "")
        return DataElement(elem.tag, elem.VR, out if elem.VM > 1 else out[0])


BURNED_IN = (
    "BurnedInAnnotation is YES: identifying text may be burned into the pixels, which"
    " PS3.15's Basic Profile without the Clean Pixel Data Option cannot clean; cohortseg does"
    " not take such an image into a pseudonymised run: remove the annotation from the pixels"
    " (and set BurnedInAnnotation to NO) or leave the series out"
)


def burned_in(headers: Iterable[Dataset]) -> bool:
    """Whether any of the images says identifying text is burned into its pixels."""
    return any(str(h.get("BurnedInAnnotation", "")).upper() == "YES" for h in headers)


def write_deidentified_series(
    files: Sequence[str | os.PathLike[str]],
    deidentifier: Deidentifier,
    folder: str | os.PathLike[str],
) -> list[str]:
    """Write a de-identified copy of each source file (pixel data and transfer syntax as
    they are) into ``folder`` as ``IM0001.dcm``…, in the order given, and remove copies of an
    earlier run beyond those; returns the paths.

    Raises ``DicomSeriesError`` for an image whose BurnedInAnnotation is ``YES`` (the Clean
    Pixel Data Option is not implemented), before writing anything."""
    headers = [pydicom.dcmread(f, stop_before_pixels=True) for f in files]
    if burned_in(headers):
        raise DicomSeriesError(BURNED_IN)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    names = {f"IM{k:04d}.dcm" for k in range(1, len(files) + 1)}
    for stale in folder.glob("IM*.dcm"):
        if stale.name not in names:
            stale.unlink()
    paths = []
    for k, file in enumerate(files, start=1):
        source = pydicom.dcmread(file)
        ds = deidentifier.dataset(source)
        ds.file_meta = FileMetaDataset()
        ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.file_meta.TransferSyntaxUID = source.file_meta.TransferSyntaxUID
        path = folder / f"IM{k:04d}.dcm"
        with atomic_write(path) as tmp:
            pydicom.dcmwrite(tmp, ds, enforce_file_format=True)
        paths.append(str(path))
    return paths
