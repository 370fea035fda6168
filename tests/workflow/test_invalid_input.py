"""Bad input: every problem listed at once and nothing expensive run (fail), or the invalid
subjects left out while the rest of the cohort finishes (skip)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from cohortseg.core.io import read_tsv, save_nifti
from cohortseg.inputs.demo import demo_phantom
from tests.workflow.conftest import snakemake

pytestmark = pytest.mark.slow

FAST = [
    # the demo's small UNet (a sample sheet's default, preset cohort, plans a DynUNet)
    "training={epochs: 2, steps_per_epoch: 3, preset: demo}",
    "shard_size=3",
    "patches={per_subject: 6}",
    "plan={max_patch_size: [32, 32, 32]}",
    # the report's extras on fewer subjects: one robustness subject at one strength, 4 montages
    "report={robustness_subjects: 1, robustness_strengths: [1.0], qc_sample: 2, qc_worst: 1,"
    " qc_unusual: 1}",
]


def make_cohort(root):
    """6 good subjects and 3 broken ones, in a sample sheet."""
    rows = ["subject\timage\tlabel\tsplit"]
    splits = ["train"] * 4 + ["val", "test"]
    for k, split in enumerate(splits):
        image, label, affine = demo_phantom([32, 32, 24], [2.5, 2.5, 3.5], seed=k)
        save_nifti(root / f"img/s{k}.nii.gz", image, affine)
        save_nifti(root / f"lab/s{k}.nii.gz", label, affine)
        rows.append(f"sub-{k}\timg/s{k}.nii.gz\tlab/s{k}.nii.gz\t{split}")
    good = (root / "img/s5.nii.gz").read_bytes()
    (root / "img/truncated.nii.gz").write_bytes(good[: len(good) // 3])
    rows.append("sub-trunc\timg/truncated.nii.gz\t\ttest")
    image, label, affine = demo_phantom([32, 32, 24], [2.5, 2.5, 3.5], seed=9)
    label[0, 0, 0] = 9
    save_nifti(root / "img/s9.nii.gz", image, affine)
    save_nifti(root / "lab/s9.nii.gz", label, affine)
    rows.append("sub-badlabel\timg/s9.nii.gz\tlab/s9.nii.gz\ttrain")
    rows.append("sub-missing\timg/missing.nii.gz\t\tinfer")
    (root / "samples.tsv").write_text("\n".join(rows) + "\n")
    return root / "samples.tsv"


EXPECTED = {
    ("sub-trunc", "image"): "truncated or corrupt",
    ("sub-badlabel", "label"): "label values [9] outside the configured classes 0..3",
    ("sub-missing", "image"): "file does not exist",
}


def check_table(workdir):
    rows = read_tsv(workdir / "results" / "qc" / "invalid_subjects.tsv")
    assert len(rows) == len(EXPECTED)
    for row in rows:
        assert EXPECTED[(row["subject"], row["kind"])] in row["problem"]


def test_fail_lists_every_problem_and_runs_nothing_expensive(tmp_path):
    sheet = make_cohort(tmp_path / "data")
    work = tmp_path / "work"
    proc = snakemake(work, "--cores", "2", "--config", f"samples={sheet}", *FAST, check=False)
    assert proc.returncode != 0
    check_table(work)
    log = (work / "logs" / "validation_gate.log").read_text()
    for subject, _ in EXPECTED:
        assert subject in log
    for expensive in ("preprocessed", "patches", "model", "segmentations"):
        assert not (work / "results" / expensive).exists(), expensive


def test_skip_leaves_invalid_subjects_out_and_finishes_the_rest_in_one_command(tmp_path):
    sheet = make_cohort(tmp_path / "data")
    work = tmp_path / "work"
    args = ("--cores", "2", "--config", f"samples={sheet}", "validation={on_invalid: skip}", *FAST)
    # one command finishes the cohort without them (up to its metrics: the report's extras are
    # checked on the demo, tests/workflow/test_demo_pipeline.py)
    snakemake(work, "results/summary.json", *args)
    check_table(work)
    gate_log = (work / "logs" / "validation_gate.log").read_text()
    assert "3 invalid subject(s) left out" in gate_log and "sub-badlabel" in gate_log
    segs = {p.name.removesuffix(".nii.gz") for p in (work / "results/segmentations").iterdir()}
    assert segs == {f"sub-{k}" for k in range(6)}
    metrics = read_tsv(work / "results" / "metrics.tsv")
    assert sorted(r["subject"] for r in metrics) == [f"sub-{k}" for k in range(6)]
    summary = json.loads((work / "results" / "summary.json").read_text())
    assert summary["invalid_subjects"] == ["sub-badlabel", "sub-missing", "sub-trunc"]
    assert summary["n_segmented"] == 6
    assert np.isfinite(summary["splits"]["test"]["dice_organ"]["mean"])
    # and stays done
    assert "Nothing to be done" in snakemake(work, "results/summary.json", "-n", *args[2:]).stdout
