"""What Snakemake reruns after a change: exactly the affected jobs (dry runs on a copy of the
finished demo run)."""

from __future__ import annotations

import math
import os
import shutil

import numpy as np
import pytest
import yaml

from cohortseg.core.cohort import auto_shard_size, demo_subjects
from cohortseg.core.io import load_nifti, save_nifti
from tests.workflow.conftest import REPO, job_counts, snakemake

CONFIG = yaml.safe_load((REPO / "config.yaml").read_text())
SUBJECTS = demo_subjects(CONFIG["demo"])
SHARD_SIZE = auto_shard_size(len(SUBJECTS))  # shard_size: auto
N_SHARDS = math.ceil(len(SUBJECTS) / SHARD_SIZE)

pytestmark = pytest.mark.slow


@pytest.fixture
def finished(demo_run, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(demo_run, copy, symlinks=True)  # copy2 keeps modification times
    return copy


def test_rerun_train_reruns_downstream_only(finished):
    counts = job_counts(snakemake(finished, "-n", "-R", "train").stdout)
    assert counts.pop("train") == 1
    assert counts["infer"] == N_SHARDS
    assert counts["evaluate"] == N_SHARDS and counts["summarise"] == 1
    for upstream in ("demo_subject", "plan", "preprocess", "patches"):
        assert upstream not in counts


def test_a_replaced_label_reruns_its_shard_and_everything_after(finished):
    subject = next(s for s in SUBJECTS if s.split == "train" and s.subject != "demo-001")
    label = finished / subject.label
    data, affine = load_nifti(label, dtype=np.uint8)
    data[data == 1] = 0  # a corrected label: the organ removed
    save_nifti(label, data, affine)
    counts = job_counts(snakemake(finished, "-n").stdout)
    assert counts["preprocess"] == 1 and counts["patches"] == 1
    assert "plan" not in counts  # one edited label does not re-plan the cohort
    assert counts["train"] == 1
    assert counts["infer"] == N_SHARDS
    assert "demo_subject" not in counts


def test_a_deleted_segmentation_reruns_only_its_shard(finished):
    victim = SUBJECTS[5].subject
    os.remove(finished / "results" / "segmentations" / f"{victim}.nii.gz")
    out = snakemake(finished, "-n").stdout
    counts = job_counts(out)
    shard = 5 // SHARD_SIZE
    assert f"results/inference/{shard:05d}.tsv" in out  # that shard's job, no other
    assert counts == {
        "rerun_marker": 1,  # the marker that makes the finished shard run again (reruns.smk)
        "infer": 1,
        "evaluate": 1,
        "summarise": 1,
        "stats": 1,
        "stats_summary": 1,
        "qc_montages": 1,
        "explanations": 1,
        "report_tables": 1,
        "report_run": 1,
        "review": 1,
        "model_versions": 1,
        "all": 1,
    }


def test_a_deleted_shard_manifest_reruns_that_shard(finished):
    os.remove(finished / "results" / "inference" / "00000.tsv")
    out = snakemake(finished, "-n").stdout
    counts = job_counts(out)
    assert counts["infer"] == 1 and "results/inference/00000.tsv" in out
    assert counts["evaluate"] == 1 and counts["stats"] == 1
    assert "train" not in counts and "preprocess" not in counts


def test_a_deleted_patch_store_reruns_its_shard_of_patches(finished):
    victim = next(s for s in SUBJECTS if s.split == "train")
    os.remove(finished / "results" / "patches" / f"{victim.subject}.h5")
    counts = job_counts(snakemake(finished, "-n").stdout)
    assert counts["patches"] == 1 and counts["train"] == 1
    assert "preprocess" not in counts and "plan" not in counts
