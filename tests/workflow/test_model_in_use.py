"""The model registry answers "which model" for every rule: on a run with two kept versions,
``--config model_version=1`` makes every product that names a model name v1's checkpoint hash
(the inference shards' manifests, the calibration, the robustness table, the explanations, the
DICOM SEG's AlgorithmVersion, the run page). And reviewers' work lives outside ``results/``:
``make clean`` and a rerun keep a correction submitted through the review datastore.

One small DICOM demo (``demo.format: dicom``, ``outputs.dicom_seg``) trained twice with two
seeds (v1, v2: two tiny trainings, as in test_annotation_loop but without the fine-tuning it
measures), then run to the end with ``model_version=1``."""

from __future__ import annotations

import json
import shutil
import subprocess

import pydicom
import pytest
import yaml

from cohortseg.core.io import read_tsv
from tests.workflow.conftest import REPO, job_counts, snakemake

pytestmark = pytest.mark.slow

TINY = {
    "demo": {
        "subjects_per_split": {"train": 2, "val": 1, "test": 1, "infer": 1},
        "shape": [32, 32, 24],
        "format": "dicom",
    },
    "model": {"channels": [4, 8, 16], "strides": [2, 2], "num_res_units": 0},
    "training": {"epochs": 1, "steps_per_epoch": 2, "batch_size": 2},
    "patches": {"per_subject": 4},
    "plan": {"max_patch_size": [16, 16, 16]},
    "report": {
        "qc_sample": 1,
        "qc_worst": 0,
        "qc_unusual": 0,
        "robustness_subjects": 1,
        "robustness_strengths": [1.0],
    },
    "outputs": {"dicom_seg": True},
}


def configfile(workdir, seed: int):
    """The tiny config with ``training.seed``, as a config file in ``workdir``."""
    config = json.loads(json.dumps(TINY))
    config["training"]["seed"] = seed
    path = workdir / f"seed{seed}.yaml"
    path.write_text(yaml.safe_dump(config))
    return str(path)


@pytest.fixture(scope="module")
def two_versions(tmp_path_factory):
    """v1 (seed 0) and v2 (seed 1) kept, then everything made with ``model_version=1``."""
    work = tmp_path_factory.mktemp("versions")
    current = "results/models/current.json"
    snakemake(work, current, "--cores", "2", "--configfile", configfile(work, 0))
    snakemake(work, current, "--cores", "2", "--configfile", configfile(work, 1))
    snakemake(
        work, "--cores", "2", "--configfile", configfile(work, 1), "--config", "model_version=1"
    )
    return work


def lineage_sha(work, n: int) -> str:
    return json.loads((work / f"results/models/v{n}/lineage.json").read_text())["sha256"]


def test_going_back_to_v1_every_product_names_v1(two_versions):
    work = two_versions
    v1, v2 = lineage_sha(work, 1), lineage_sha(work, 2)
    assert v1 != v2
    assert json.loads((work / "results/models/current.json").read_text())["version"] == 1
    segmented = [r for m in (work / "results/inference").glob("*.tsv") for r in read_tsv(m)]
    assert segmented and {r["model_sha256"] for r in segmented} == {v1}
    assert json.loads((work / "results/calibration.json").read_text())["model_sha256"] == v1
    assert {r["model_sha256"] for r in read_tsv(work / "results/robustness.tsv")} == {v1}
    explained = json.loads((work / "results/qc/explanations/model.json").read_text())
    assert explained["model_sha256"] == v1 and explained["version"] == "v1"
    segs = sorted((work / "results/dicom_seg").glob("*.dcm"))
    assert segs
    for path in segs:
        segment = pydicom.dcmread(path).SegmentSequence[0]
        algorithm = segment.SegmentationAlgorithmIdentificationSequence[0]
        assert v1[:16] in algorithm.AlgorithmVersion and v2[:16] not in algorithm.AlgorithmVersion
    page = (work / "results/report/run.html").read_text()
    assert v1 in page and v2 not in page


def test_a_correction_submitted_through_the_datastore_survives_make_clean(two_versions, tmp_path):
    work = tmp_path / "work"
    shutil.copytree(two_versions, work, symlinks=True)
    final = work / "results/review/datastore/labels/final"
    assert final.is_symlink() and final.resolve() == (work / "corrections").resolve()
    # what MONAI Label does when a reviewer submits: a label map under labels/final/
    subject = next(r["subject"] for r in read_tsv(work / "results/metrics.tsv"))
    correction = work / "corrections" / f"{subject}.nii.gz"
    shutil.copyfile(work / f"results/segmentations/{subject}.nii.gz", final / f"{subject}.nii.gz")
    assert correction.exists()
    submitted = correction.read_bytes()
    subprocess.run(["make", "-C", str(work), "-f", str(REPO / "Makefile"), "clean"], check=True)
    assert not (work / "results").exists() and correction.read_bytes() == submitted
    config = ["--configfile", configfile(work, 1)]
    assert job_counts(snakemake(work, "-n", *config).stdout)["correct_label"] == 1
    checked = f"results/corrections/{subject}.nii.gz"
    snakemake(work, checked, "--cores", "2", *config)  # the rerun reads it from corrections/
    assert (work / checked).exists() and correction.read_bytes() == submitted
