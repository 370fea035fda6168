"""Cohorts of any size: no job's command line grows with the cohort, and a cohort whose
training subjects' paths together exceed Linux's 128 KiB limit on one argument runs for real."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from cohortseg.core.io import read_tsv, save_nifti
from cohortseg.inputs.demo import demo_phantom
from tests.workflow.conftest import job_counts, snakemake

pytestmark = pytest.mark.slow

# Linux refuses one argument longer than MAX_ARG_STRLEN (32 pages = 128 KiB).
MAX_ARG_STRLEN = 128 * 1024
# What "a few KiB" means here: the longest command is the training job's, whose configuration
# sections take about 1.5 KiB.
COMMAND_LIMIT = 4096


def deep_dir(root: Path, length: int) -> Path:
    """A directory under ``root`` whose path is about ``length`` characters long."""
    path = root
    while len(str(path)) < length - 60:
        path = path / ("nested-folder-of-a-hospital-export-" + "x" * 20)
    return path


def write_sheet(
    root: Path, n_train: int, n_test: int, n_infer: int, files: bool, path_length: int = 440
) -> Path:
    """A sample sheet of subjects with paths of about ``path_length`` characters; with
    ``files``, tiny phantoms (16×16×10 voxels) written there (else empty placeholders, enough
    for a dry run)."""
    folder = deep_dir(root, path_length)
    folder.mkdir(parents=True)
    rows = ["subject\timage\tlabel\tsplit"]
    splits = ["train"] * n_train + ["val"] + ["test"] * n_test + ["infer"] * n_infer
    for k, split in enumerate(splits):
        image, label = folder / f"s{k:05d}_image.nii.gz", folder / f"s{k:05d}_label.nii.gz"
        if files:
            data, labels, affine = demo_phantom([16, 16, 10], [4.0, 4.0, 5.0], seed=k)
            save_nifti(image, data, affine)
            save_nifti(label, labels, affine)
        else:
            image.touch()
            label.touch()
        labelled = split != "infer"
        rows.append(f"s{k:05d}\t{image}\t{label if labelled else ''}\t{split}")
    sheet = root / "samples.tsv"
    sheet.write_text("\n".join(rows) + "\n")
    return sheet


def shell_commands(output: str) -> list[str]:
    return re.findall(r"^Shell command: (.*)$", output, flags=re.MULTILINE)


def test_no_command_line_grows_with_the_cohort(tmp_path):
    longest = {}
    for n in (40, 3000):
        sheet = write_sheet(
            tmp_path / str(n), n_train=n // 2, n_test=2, n_infer=n // 2 - 3, files=False
        )
        out = snakemake(tmp_path / f"work{n}", "-n", "-p", "--config", f"samples={sheet}").stdout
        commands = shell_commands(out)
        assert len(commands) > 10
        longest[n] = max(len(c) for c in commands)
    assert longest[3000] <= COMMAND_LIMIT, longest
    assert longest[3000] - longest[40] <= 16, longest  # digits of counts at most


FAST = [
    "training={epochs: 1, steps_per_epoch: 2, batch_size: 2}",
    "inference={splits: [test]}",
    "patches={per_subject: 2}",
    "plan={max_patch_size: [16, 16, 16]}",
    # the network is a sample sheet's default: model.name auto (the plan's DynUNet)
]


def test_a_cohort_whose_training_paths_exceed_128_kib_runs(tmp_path):
    # paths of ~3,500 characters (PATH_MAX is 4,096): 24 training subjects pass 128 KiB
    sheet = write_sheet(
        tmp_path / "data", n_train=24, n_test=2, n_infer=0, files=True, path_length=3500
    )
    train_paths = [
        r["image"] + r["label"] for r in read_tsv(sheet) if r["split"] in ("train", "val")
    ]
    assert sum(len(p) + 2 for p in train_paths) > MAX_ARG_STRLEN
    work = tmp_path / "work"
    # up to the metrics: the report's extras add nothing to what this checks
    snakemake(work, "results/metrics.tsv", "--cores", "2", "--config", f"samples={sheet}", *FAST)
    stores = [r for m in (work / "results" / "patches").glob("*.tsv") for r in read_tsv(m)]
    assert len(stores) == 24
    metrics = read_tsv(work / "results" / "metrics.tsv")
    assert sorted(r["subject"] for r in metrics) == ["s00025", "s00026"]
    # a sample sheet's default network: the plan's (training.preset auto → cohort)
    plan = json.loads((work / "results" / "plan" / "plan.json").read_text())
    assert plan["network"]["strides"][0] == [1, 1, 1]
    # a real cohort's own files are not inputs of the DAG but a digest of them is a param of
    # their shard's jobs: a replaced (here: touched) test image reruns its inference shard only
    os.utime(next(r["image"] for r in read_tsv(sheet) if r["subject"] == "s00025"))
    args = ("results/metrics.tsv", "-n", "--config", f"samples={sheet}", *FAST)
    counts = job_counts(snakemake(work, *args).stdout)
    assert counts["infer"] == 1 and counts["evaluate"] == 1
    assert "train" not in counts and "preprocess" not in counts and "validate" not in counts
