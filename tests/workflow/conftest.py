"""Running the real snakemake CLI on this repository's workflow in a scratch directory."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def snakemake_command(workdir: Path, *args: str) -> tuple[list[str], dict[str, str]]:
    """``snakemake -s REPO/Snakefile -d workdir ARGS`` and the environment to run it in (this
    interpreter's bin directory first on the PATH)."""
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    cmd = [
        str(Path(sys.executable).parent / "snakemake"),
        "-s",
        str(REPO / "Snakefile"),
        "-d",
        str(workdir),
        *args,
    ]
    return cmd, env


def snakemake(workdir: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    """Run ``snakemake -s REPO/Snakefile -d workdir ARGS`` with this interpreter's environment."""
    cmd, env = snakemake_command(workdir, *args)
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if check and proc.returncode != 0:
        raise AssertionError(
            f"{' '.join(cmd)} failed ({proc.returncode}):\n"
            f"{proc.stdout[-5000:]}\n{proc.stderr[-5000:]}"
        )
    return proc


def job_counts(dry_run_output: str) -> dict[str, int]:
    """Jobs per rule from the 'Job stats' table of a ``snakemake -n`` run ({} when there is
    nothing to be done)."""
    counts: dict[str, int] = {}
    lines = dry_run_output.splitlines()
    if "Nothing to be done" in dry_run_output:
        return counts
    start = next(i for i, line in enumerate(lines) if line.startswith("Job stats"))
    for line in lines[start + 3 :]:
        parts = line.split()
        if len(parts) != 2 or not parts[1].isdigit():
            break
        if parts[0] != "total":
            counts[parts[0]] = int(parts[1])
    return counts


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory) -> Path:
    """The whole demo pipeline, run once with the default config."""
    workdir = tmp_path_factory.mktemp("demo")
    snakemake(workdir, "--cores", "2")
    return workdir


@pytest.fixture(scope="session")
def pseudonymised_run_of_both(tmp_path_factory) -> dict:
    """One pseudonymised run (``privacy.pseudonymize`` with a mapping file,
    ``validation.on_invalid: skip``, ``outputs.dicom_seg`` and ``outputs.rtstruct``,
    ``dicom.deidentification`` with longitudinal dates and one safe descriptor) over one sheet
    holding the NIfTI subjects with identifying names, headers and extensions of test_privacy
    and the DICOM series with identifying attributes, descriptions, private tags, file and
    folder names of test_dicom, shared by both tests (one run instead of two: the slowest part
    of each is the workflow itself). Returns ``work``, ``mapping`` (the id → pseudonym table)
    and ``dicom_secrets`` (every identifying string planted in the DICOM inputs, their UIDs
    included)."""
    from cohortseg.core.io import read_tsv
    from tests.workflow.test_dicom import DEIDENTIFICATION, dicom_cohort
    from tests.workflow.test_privacy import planted_cohort, pseudonymised_run

    root = tmp_path_factory.mktemp("pseudonymised")
    planted = planted_cohort(root / "nifti")
    dicom, dicom_secrets = dicom_cohort(root / "dicom")
    rows = ["subject\timage\tlabel\tsplit\tseries"]
    for r in read_tsv(planted):  # paths relative to their sheet, made absolute
        label = str(planted.parent / r["label"]) if r["label"] else ""
        rows.append(f"{r['subject']}\t{planted.parent / r['image']}\t{label}\t{r['split']}\t")
    rows += [
        "\t".join(r[c] for c in ("subject", "image", "label", "split", "series"))
        for r in read_tsv(dicom)
    ]
    sheet = root / "samples.tsv"
    sheet.write_text("\n".join(rows) + "\n")
    mapping = root / "private" / "mapping.tsv"
    work = root / "work"
    pseudonymised_run(
        work,
        sheet,
        f", mapping_file: {mapping}",
        "validation={on_invalid: skip}",
        "outputs={dicom_seg: true, rtstruct: true}",
        f"dicom={{deidentification: {DEIDENTIFICATION}}}",
    )
    return {"work": work, "mapping": mapping, "dicom_secrets": dicom_secrets}
