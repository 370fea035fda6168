"""Pseudonymised runs: no identifying string from ids, file names, folder names, NIfTI headers
and extensions, or DICOM inputs (patient, study and institution attributes, dates, series and
study descriptions, protocol names, comments, private tags, source UIDs; a series with
burned-in annotation refused) reaches any byte under results/ or logs/, gzip files decompressed
(NIfTI headers included)."""

from __future__ import annotations

import gzip
import os
import re

import nibabel as nib
import pytest

from cohortseg.core.io import read_tsv
from cohortseg.inputs.demo import demo_phantom
from tests.workflow.conftest import snakemake
from tests.workflow.test_invalid_input import FAST

pytestmark = pytest.mark.slow

NAME, BIRTH, MRN = "JaneDoe", "19610423", "MRN7741093"
UID = re.compile(r"[0-9]+(?:\.[0-9]+)+")
UID_BYTES = re.compile(rb"[0-9]+(?:\.[0-9]+)+")


def planted_cohort(root):
    rows = ["subject\timage\tlabel\tsplit"]
    for k, split in enumerate(["train"] * 4 + ["val", "test", "infer"]):
        sid = f"{NAME}-{BIRTH}-{MRN}-{k}"
        image, label, affine = demo_phantom([32, 32, 24], [2.5, 2.5, 3.5], seed=k)
        for kind, data in (("img", image), ("lab", label)):
            img = nib.Nifti1Image(data, affine)
            img.header["descrip"] = f"{NAME} {BIRTH}".encode()
            img.header["aux_file"] = MRN.encode()
            img.header["db_name"] = NAME.encode()
            img.header["intent_name"] = BIRTH.encode()
            img.header.extensions.append(
                nib.nifti1.Nifti1Extension("comment", f"patient {NAME} {MRN}".encode())
            )
            (root / kind).mkdir(parents=True, exist_ok=True)
            nib.save(img, str(root / kind / f"{sid}.nii.gz"))
        label_cell = f"lab/{sid}.nii.gz" if split != "infer" else ""
        rows.append(f"{sid}\timg/{sid}.nii.gz\t{label_cell}\t{split}")
    (root / "samples.tsv").write_text("\n".join(rows) + "\n")
    return root / "samples.tsv"


def leaks(directory, secrets=(NAME, BIRTH, MRN)):
    """(file, secret) for each secret found in the bytes of any file (and in the decompressed
    bytes of gzip files) or in the path of a file under ``directory``. Secrets that are UIDs
    are matched as whole UIDs (every UID-like run of a file's bytes, in one pass)."""
    uids = {s for s in secrets if UID.fullmatch(s)}
    texts = [s for s in secrets if s not in uids]
    found = []
    for dirpath, _, files in os.walk(directory):
        for name in files:
            path = os.path.join(dirpath, name)
            with open(path, "rb") as handle:
                blobs = [handle.read()]
            if name.endswith(".gz"):
                blobs.append(gzip.decompress(blobs[0]))
            for secret in texts:
                if any(secret.encode() in b for b in blobs) or secret in path:
                    found.append((path, secret))
            tokens = {t.decode() for b in blobs for t in UID_BYTES.findall(b)}
            tokens |= set(UID.findall(path))
            found += [(path, uid) for uid in sorted(tokens & uids)]
    return found


def pseudonymised_run(work, sheet, privacy: str = "", *config: str) -> None:
    """The workflow on ``sheet`` with ``privacy.pseudonymize`` on (and ``privacy``'s other
    keys, YAML) and a key in the environment, with the FAST test settings."""
    os.environ["COHORTSEG_PSEUDONYM_KEY"] = "test-key-not-secret"
    try:
        snakemake(
            work,
            "--cores",
            "2",
            "--config",
            f"samples={sheet}",
            f"privacy={{pseudonymize: true{privacy}}}",
            *config,
            *FAST,
        )
    finally:
        del os.environ["COHORTSEG_PSEUDONYM_KEY"]


def test_nothing_identifying_reaches_results_or_logs(pseudonymised_run_of_both):
    """The shared run (tests/workflow/conftest.py): the NIfTI subjects' outputs here, the
    DICOM subjects' in test_dicom; nothing identifying of either anywhere."""
    work, mapping = pseudonymised_run_of_both["work"], pseudonymised_run_of_both["mapping"]
    pairs = [p for p in read_tsv(mapping) if p["subject"].startswith(NAME)]
    assert len(pairs) == 7
    segs = [work / "results" / "segmentations" / f"{p['pseudonym']}.nii.gz" for p in pairs]
    assert all(seg.exists() for seg in segs)
    metrics = {r["subject"] for r in read_tsv(work / "results" / "metrics.tsv")}
    assert {p["pseudonym"] for p in pairs} <= metrics
    # every identifying string of the NIfTI and the DICOM inputs (tests/workflow/test_dicom.py)
    secrets = [NAME, BIRTH, MRN, *pseudonymised_run_of_both["dicom_secrets"]]
    assert len(secrets) > 200  # the DICOM inputs' UIDs among them
    assert leaks(work / "results", secrets) == []
    assert leaks(work / "logs", secrets) == []
    header = nib.load(segs[0]).header
    assert header["descrip"].item() == b"" and len(header.extensions) == 0
