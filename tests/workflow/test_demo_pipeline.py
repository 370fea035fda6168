"""The whole pipeline on the demo cohort, through the real snakemake CLI."""

from __future__ import annotations

import json
import math

import nibabel as nib
import numpy as np
import pytest
import yaml

from cohortseg.core.cohort import demo_subjects
from cohortseg.core.io import read_tsv
from tests.workflow.conftest import REPO, job_counts, snakemake

CONFIG = yaml.safe_load((REPO / "config.yaml").read_text())
SUBJECTS = demo_subjects(CONFIG["demo"])

pytestmark = pytest.mark.slow


def test_every_segmentation_has_its_image_shape_and_affine(demo_run):
    for s in SUBJECTS:
        image = nib.load(demo_run / s.image)
        seg = nib.load(demo_run / "results" / "segmentations" / f"{s.subject}.nii.gz")
        assert seg.shape == image.shape, s.subject
        np.testing.assert_allclose(seg.affine, image.affine, atol=1e-5, err_msg=s.subject)
        assert seg.get_data_dtype() == np.uint8


def test_test_split_dice_is_at_least_0_80_for_every_class(demo_run):
    rows = [r for r in read_tsv(demo_run / "results" / "metrics.tsv") if r["split"] == "test"]
    assert len(rows) == CONFIG["demo"]["subjects_per_split"]["test"]
    for c in CONFIG["classes"]:
        mean = float(np.mean([float(r[f"dice_{c}"]) for r in rows]))
        assert mean >= 0.80, f"mean test Dice of {c} is {mean:.3f}"


def test_metrics_table_and_summary(demo_run):
    rows = read_tsv(demo_run / "results" / "metrics.tsv")
    assert sorted(r["subject"] for r in rows) == sorted(s.subject for s in SUBJECTS)
    for r in rows:
        volumes = [float(r[f"volume_ml_{c}"]) for c in CONFIG["classes"]]
        assert all(v > 0 for v in volumes), r["subject"]
        has_label = r["split"] != "infer"
        assert (r["dice_organ"] != "") == has_label
        if has_label:
            assert all(float(r[f"hd95_mm_{c}"]) < 10 for c in CONFIG["classes"])
    summary = json.loads((demo_run / "results" / "summary.json").read_text())
    assert summary["n_subjects"] == len(SUBJECTS)
    assert summary["splits"]["test"]["dice_organ"]["n"] == 4
    assert len(summary["worst_subjects"]) == 5


def test_uncertainty_calibration_and_robustness_are_measured(demo_run):
    rows = read_tsv(demo_run / "results" / "stats.tsv")
    assert len(rows) == len(SUBJECTS)
    for r in rows:
        for c in CONFIG["classes"]:
            assert 0 <= float(r[f"uncertainty_{c}"]) < 0.5, (r["subject"], c)
            assert r[f"uncertainty_z_{c}"] != ""
            assert r[f"tta_disagreement_{c}"] == "nan"  # tta: none by default
    calibration = json.loads((demo_run / "results" / "calibration.json").read_text())
    assert calibration["n_subjects"] == CONFIG["demo"]["subjects_per_split"]["val"]
    assert 0 <= calibration["ece"] < 0.1
    table = read_tsv(demo_run / "results" / "robustness.tsv")
    assert {r["perturbation"] for r in table} == {
        "noise",
        "bias_field",
        "intensity_scale",
        "gamma",
        "resolution_loss",
        "rotation",
    }
    clean = [float(r["mean_dice"]) for r in table if float(r["strength"]) == 0]
    assert min(clean) > 0.8 and len(set(clean)) == 1  # the clean copies, once per line
    for name in ("calibration.png", "robustness.png"):
        assert (demo_run / "results" / "report" / name).read_bytes()[:4] == b"\x89PNG"
    montages = {p.name for p in (demo_run / "results" / "qc" / "montages").glob("*.png")}
    assert {
        p.name for p in (demo_run / "results" / "qc" / "explanations").glob("*.png")
    } == montages


def test_every_rule_left_a_log_and_a_benchmark(demo_run):
    for rule in ("plan", "train", "summarise"):
        assert (demo_run / "logs" / f"{rule}.log").exists()
        assert (demo_run / "logs" / "benchmarks" / f"{rule}.tsv").exists()
    for rule in ("demo_subject", "preprocess", "patches", "infer", "evaluate"):
        assert any((demo_run / "logs" / rule).iterdir()), rule
        assert any((demo_run / "logs" / "benchmarks" / rule).iterdir()), rule
    log = read_tsv(demo_run / "results" / "model" / "training_log.tsv")
    assert len(log) == CONFIG["training"]["epochs"]
    assert (demo_run / "results" / "model" / "learning_curve.png").read_bytes()[:4] == b"\x89PNG"


def test_nothing_is_left_to_do_after_a_run(demo_run):
    out = snakemake(demo_run, "-n").stdout
    assert "Nothing to be done" in out


@pytest.mark.parametrize("shard_size", [1, 5, 16, "auto"])  # 16 demo subjects
def test_every_stage_runs_in_ceil_n_over_shard_size_jobs(tmp_path, shard_size):
    out = snakemake(tmp_path, "-n", "--config", f"shard_size={shard_size}").stdout
    counts = job_counts(out)
    size = 4 if shard_size == "auto" else shard_size  # auto: 16 subjects -> 4 shards of 4
    # the demo's subjects come in split order: 8 train, 2 val, 4 test, 2 infer
    assert counts["validate"] == counts["infer"] == math.ceil(len(SUBJECTS) / size)
    assert counts["preprocess"] == math.ceil(10 / size)
    assert counts["patches"] == math.ceil(8 / size)
    assert counts["evaluate"] == counts["stats"] == counts["infer"]
    assert counts["train"] == 1 and counts["plan"] == 1


def test_a_wrong_config_value_fails_at_once_naming_the_key(tmp_path):
    proc = snakemake(tmp_path, "-n", "--config", "shard_size=0", check=False)
    assert proc.returncode != 0
    assert "shard_size" in proc.stdout + proc.stderr
    proc = snakemake(tmp_path, "-n", "--config", "trainin={epochs: 3}", check=False)
    assert proc.returncode != 0
    assert "trainin" in proc.stdout + proc.stderr
