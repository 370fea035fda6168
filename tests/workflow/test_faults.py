"""Killed jobs and damaged files: reruns complete with valid outputs and redo only what was
lost."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import h5py
import nibabel as nib
import pytest
import yaml

from cohortseg.core.cohort import auto_shard_size, demo_subjects
from cohortseg.preprocessing.patches import check_store
from tests.workflow.conftest import REPO, job_counts, snakemake, snakemake_command

CONFIG = yaml.safe_load((REPO / "config.yaml").read_text())
SUBJECTS = demo_subjects(CONFIG["demo"])
SHARD = auto_shard_size(len(SUBJECTS))  # shard_size: auto

pytestmark = pytest.mark.slow


@pytest.fixture
def finished(demo_run, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(demo_run, copy, symlinks=True)
    return copy


def segmentation(workdir: Path, subject: str) -> Path:
    return workdir / "results" / "segmentations" / f"{subject}.nii.gz"


def test_a_killed_inference_shard_is_redone_and_nothing_else(finished):
    second = SUBJECTS[SHARD : 2 * SHARD]
    others = [s for s in SUBJECTS if s not in second]
    done = {s.subject: segmentation(finished, s.subject).stat().st_mtime_ns for s in others}
    for s in second:  # shard 1 is lost; kill its rerun half-way
        segmentation(finished, s.subject).unlink()
    # the default target, which names every segmentation: with a narrower one (e.g.
    # results/metrics.tsv) Snakemake 9 keeps the shard's existing metrics and does not remake
    # an intermediate file that is missing (the lost segmentations)
    cmd, env = snakemake_command(finished, "--cores", "1")
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 600
    while not segmentation(finished, second[0].subject).exists():
        assert proc.poll() is None and time.time() < deadline, "shard 1 never wrote"
        time.sleep(0.05)
    shard_pids = subprocess.run(
        ["pgrep", "-f", "scripts/infer.py"], capture_output=True, text=True
    ).stdout.split()
    assert shard_pids, "no shard process to kill"
    for pid in shard_pids:  # the shard job, half-way through its subjects
        os.kill(int(pid), signal.SIGKILL)
    assert proc.wait(timeout=300) != 0  # Snakemake reports the failed job and stops
    assert not all(segmentation(finished, s.subject).exists() for s in second)
    out = snakemake(finished, "-n").stdout
    assert job_counts(out)["infer"] == 1 and "results/inference/00001.tsv" in out
    snakemake(finished, "--cores", "1")  # the same command again
    for s in SUBJECTS:
        img, seg = nib.load(finished / s.image), nib.load(segmentation(finished, s.subject))
        assert seg.shape == img.shape
        seg.get_fdata()  # decodes completely
    assert {s: segmentation(finished, s).stat().st_mtime_ns for s in done} == done
    leftovers = [
        p.name for p in (finished / "results" / "segmentations").iterdir() if p.name.startswith(".")
    ]
    assert leftovers == []


def test_a_damaged_patch_store_is_detected_and_rebuilt(finished):
    subject = next(s.subject for s in SUBJECTS if s.split == "train")
    store = finished / "results" / "patches" / f"{subject}.h5"
    data = store.read_bytes()
    store.write_bytes(data[: len(data) // 2])  # a store cut short
    assert check_store(store) is not None
    counts = job_counts(snakemake(finished, "-n").stdout)
    assert counts["patches"] == 1 and counts["train"] == 1
    snakemake(finished, "--cores", "2", "results/patches/00000.tsv")  # its shard's manifest
    assert check_store(store) is None
    with h5py.File(store) as h5:
        assert h5["image"].shape[0] == CONFIG["patches"]["per_subject"]
    assert "patches" not in job_counts(snakemake(finished, "-n").stdout)


def test_a_flipped_byte_inside_a_patch_is_caught_when_read(tmp_path, demo_run):
    from cohortseg.core.errors import CohortsegError
    from cohortseg.preprocessing.patches import PatchDataset

    subject = next(s.subject for s in SUBJECTS if s.split == "train")
    store = tmp_path / "store.h5"
    shutil.copy(demo_run / "results" / "patches" / f"{subject}.h5", store)
    with h5py.File(store) as h5:
        offset = h5["image"].id.get_chunk_info(0).byte_offset
    raw = bytearray(store.read_bytes())
    raw[offset + 100] ^= 0xFF
    store.write_bytes(bytes(raw))
    with pytest.raises(CohortsegError, match="corrupt at patch 0"):
        PatchDataset([store])[0]
