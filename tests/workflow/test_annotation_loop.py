"""The annotation loop end to end on a small demo, through the real snakemake CLI:
train v1 → review package → a correction saved as Slicer would → fine-tune → v2
(benchmarks/annotation_loop.py --tiny, which prints the figures)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from cohortseg.core.io import read_tsv
from tests.workflow.conftest import REPO, job_counts, snakemake

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def loop(tmp_path_factory):
    """The loop's work directory and its printed figures."""
    workdir = tmp_path_factory.mktemp("loop")
    proc = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "annotation_loop.py"), "--tiny"]
        + ["--workdir", str(workdir)],
        capture_output=True,
        text=True,
    )
    figures = dict(line.split(": ", 1) for line in proc.stdout.splitlines() if ": " in line)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    return workdir, {k: v.split()[0] for k, v in figures.items()}


def test_fine_tuning_on_the_correction_beats_v1_in_far_fewer_steps(loop):
    _, figures = loop
    assert float(figures["dice_v2_corrected_subject"]) > float(figures["dice_v1_corrected_subject"])
    assert 2 * int(figures["fine_tune_steps"]) <= int(figures["scratch_steps"])
    assert figures["nothing_to_do_after"] == "true"


def test_review_package_and_corrected_label(loop):
    workdir, figures = loop
    subject = figures["corrected_subject"]
    review = {r["subject"]: r for r in read_tsv(workdir / "results/review/review.tsv")}
    assert review[subject]["why"] == "listed in review.subjects"
    store = workdir / "results/review/datastore"
    assert (store / f"{subject}.nii.gz").exists()
    assert (store / "labels/original" / f"{subject}.nii.gz").exists()
    assert (workdir / "results/corrections" / f"{subject}.nii.gz").exists()
    rows = {r["subject"]: r for r in read_tsv(workdir / "results/metrics.tsv")}
    assert rows[subject]["split"] == "train" and rows[subject]["dice_organ"] != ""


def test_versions_lineage_bundle_and_going_back(loop):
    workdir, _ = loop
    models = workdir / "results/models"
    versions = read_tsv(models / "versions.tsv")
    assert [(r["version"], r["parent"]) for r in versions] == [("v1", ""), ("v2", "v1")]
    assert all(r["test_dice_organ"] != "" for r in versions)
    assert json.loads((models / "current.json").read_text())["version"] == 2
    lineage = json.loads((models / "v2/lineage.json").read_text())
    assert (
        lineage["training_subjects_hash"]
        != json.loads((models / "v1/lineage.json").read_text())["training_subjects_hash"]
    )
    for name in ("configs/metadata.json", "configs/inference.json", "models/model.pt"):
        assert (models / "v2/bundle" / name).exists(), name
    # one config key goes back to v1: the cohort is segmented again, nothing is trained
    counts = job_counts(
        snakemake(workdir, "-n", "--configfile", str(workdir / "loop.yaml"), "--config",
                  "model_version=1").stdout
    )  # fmt: skip
    assert counts["infer"] >= 1 and "train" not in counts
