"""A dry run has no side effects: ``snakemake -n`` leaves the working directory byte-identical,
on a fresh directory and on a finished run (one with a lost segmentation and a damaged patch
store included: the dry run names the jobs that repair them and writes no marker), and parsing
the Snakefile imports neither torch nor h5py.

What Snakemake itself may write, and why: its own bookkeeping under ``.snakemake/`` only —
``log/`` (one log per invocation, dry runs included), ``locks/`` (taken and released while it
plans), ``iocache/`` (the dry run's file-status cache, which a later ``--trust-io-cache`` run
may reuse) and the empty folders it lays out at start (``metadata/``, ``conda/``,
``singularity/``, ...). No job's record (``metadata/``), no product, no log of ours.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from cohortseg.core.cohort import demo_subjects
from tests.workflow.conftest import job_counts, snakemake, snakemake_command
from tests.workflow.test_reruns import CONFIG

pytestmark = pytest.mark.slow

#: Snakemake's own bookkeeping, which a dry run may write (see the module's docstring).
SNAKEMAKE_BOOKKEEPING = (".snakemake/log/", ".snakemake/locks/", ".snakemake/iocache/")


def snapshot(root: Path) -> dict[str, str]:
    """Every path under ``root`` → what it is (a file's SHA-256, a link's target, ``dir``),
    leaving out Snakemake's bookkeeping: its folders and the files of SNAKEMAKE_BOOKKEEPING."""
    found = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(folder) / name
            rel = path.relative_to(root).as_posix()
            if rel.startswith(SNAKEMAKE_BOOKKEEPING):
                continue
            if path.is_symlink():
                found[rel] = f"link {os.readlink(path)}"
            elif path.is_dir():
                if not rel.startswith(".snakemake"):
                    found[rel] = "dir"
            else:
                found[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
    return found


def test_a_dry_run_of_a_fresh_directory_writes_nothing(tmp_path):
    out = snakemake(tmp_path, "-n").stdout
    assert job_counts(out)["train"] == 1
    assert snapshot(tmp_path) == {}


def test_a_dry_run_of_a_finished_run_leaves_it_byte_identical(demo_run, tmp_path):
    finished = tmp_path / "run"
    shutil.copytree(demo_run, finished, symlinks=True)
    assert "Nothing to be done" in snakemake(finished, "-n").stdout
    # a lost segmentation and a store cut short: the dry run plans their repair
    subjects = demo_subjects(CONFIG["demo"])
    os.remove(finished / "results" / "segmentations" / f"{subjects[5].subject}.nii.gz")
    train = next(s.subject for s in subjects if s.split == "train")
    store = finished / "results" / "patches" / f"{train}.h5"
    store.write_bytes(store.read_bytes()[:1000])
    before = snapshot(finished)
    counts = job_counts(snakemake(finished, "-n").stdout)
    assert counts["rerun_marker"] == 2 and counts["patches"] == 1 and counts["infer"] >= 1
    assert snapshot(finished) == before
    assert not list((finished / "results").rglob(".incomplete/*"))


def test_parsing_the_snakefile_imports_no_torch_or_h5py(tmp_path):
    """The dry run's own process, as Snakemake runs it (no job runs in a dry run)."""
    heavy = ("torch", "h5py", "monai", "matplotlib", "highdicom", "flwr")
    probe = (
        "import atexit, runpy, sys\n"
        f"heavy = {heavy!r}\n"
        "atexit.register(lambda: print('HEAVY', sorted(m for m in heavy if m in sys.modules)))\n"
        "sys.argv = ['snakemake', *sys.argv[1:]]\n"
        "runpy.run_module('snakemake', run_name='__main__')\n"
    )
    cmd, env = snakemake_command(tmp_path, "-n")
    proc = subprocess.run(
        [sys.executable, "-c", probe, *cmd[1:]], capture_output=True, text=True, env=env
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "HEAVY []" in proc.stdout, proc.stdout[-2000:]
