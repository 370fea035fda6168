"""The demo pipeline through `snakemake --profile profiles/slurm` on a real SLURM cluster.

Needs a running cluster (tests/cluster/slurm-up.sh, which .ci/run starts). Without one the
test is skipped, unless COHORTSEG_REQUIRE_SLURM=1 (as in CI), where it fails.
"""

from __future__ import annotations

import math
import os
import re
import shutil
import subprocess

import nibabel as nib
import numpy as np
import pytest

from cohortseg.core.cohort import demo_subjects
from cohortseg.core.io import read_tsv
from tests.workflow.conftest import REPO, snakemake

DEMO = {
    "subjects_per_split": {"train": 6, "val": 1, "test": 2, "infer": 1},
    "shape": [56, 56, 40],
    "spacing_mm": [1.7, 1.7, 2.4],
    "seed": 0,
    "format": "nifti",
}
TRAIN_TASKS = 2
SHARD_SIZE = 5

pytestmark = pytest.mark.slow


def cluster_is_up() -> bool:
    if shutil.which("sinfo") is None:
        return False
    proc = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=30)
    # "completing": a node still cleaning up after a job (e.g. another test's) answers too
    states = ("idle", "mixed", "alloc", "completing")
    return proc.returncode == 0 and any(s in proc.stdout for s in states)


@pytest.fixture(scope="module")
def slurm_run(tmp_path_factory):
    if not cluster_is_up():
        if os.environ.get("COHORTSEG_REQUIRE_SLURM") == "1":
            pytest.fail("no SLURM cluster answers (run tests/cluster/slurm-up.sh)")
        pytest.skip("no SLURM cluster (tests/cluster/slurm-up.sh starts one)")
    workdir = tmp_path_factory.mktemp("slurm")
    cluster = (
        "{rules: {default: {mem_mb: 1000, runtime: 30, cpus_per_task: 1},"
        f" train: {{mem_mb: 4000, runtime: 60, cpus_per_task: 1, tasks: {TRAIN_TASKS}, gpus: 0}},"
        " infer: {mem_mb: 2000, runtime: 30, cpus_per_task: 1, gpus: 0}}}"
    )
    demo = (
        "{subjects_per_split: {train: 6, val: 1, test: 2, infer: 1}, shape: [56, 56, 40],"
        " spacing_mm: [1.7, 1.7, 2.4], seed: 0}"
    )
    proc = snakemake(
        workdir,
        "--profile",
        str(REPO / "profiles" / "slurm"),
        "--slurm-status-command",
        "squeue",
        # the plugin waits this long before its first status check and 10 s more after each
        # check that finds nothing finished: with 5 s, checks at 5 and 20 s catch this test's
        # jobs (10-20 s each with the SLURM start) in 20 s; with 1 s, at 1, 12 and 33 s
        "--slurm-init-seconds-before-status-checks",
        "5",
        # room for every job that is ready after training (the inference shards, calibration,
        # robustness, the model version), so that the inference shards go as one array
        "--jobs",
        "8",
        "--config",
        f"cluster={cluster}",
        f"demo={demo}",
        f"shard_size={SHARD_SIZE}",
        # the report's extras on few subjects: what this test checks is where jobs ran
        "report={robustness_subjects: 1, robustness_strengths: [1.0], qc_sample: 2, qc_worst: 1,"
        " qc_unusual: 1}",
        # a command-line --config replaces the profile's `config:` entry, so it repeats it;
        # a few steps: what this test checks is where and how jobs ran (the demo's accuracy is
        # tests/workflow/test_demo_pipeline.py's)
        "training={launcher: srun, backend: ddp, epochs: 2, steps_per_epoch: 3}",
    )
    return workdir, proc.stdout + proc.stderr


ARRAY = re.compile(r"SLURM job ID (\d+)\. The individual task IDs are (\d+)-(\d+)")


SHARDED = ("validate", "preprocess", "patches", "infer", "evaluate", "stats")
# the Snakefile's localrules: small gathering steps that run where snakemake runs
LOCAL = (
    "all",
    "demo_subject",
    "validation_table",
    "validation_gate",
    "model_version",
    "summarise",
    "stats_summary",
    "run_config",
)


def test_every_job_ran_as_a_slurm_job_and_the_shards_as_job_arrays(slurm_run):
    workdir, output = slurm_run
    job_ids = set(re.findall(r"SLURM jobid (\d+)", output))
    arrays = ARRAY.findall(output)
    assert job_ids and arrays, output[-3000:]
    tasks = {
        f"{array_id}_{k}": array_id
        for array_id, first, last in arrays
        for k in range(int(first), int(last) + 1)
    }
    rows = subprocess.run(
        ["squeue", "-h", "-t", "all", "-o", "%i|%T|%k"]
        + ["-j", ",".join(sorted(job_ids | {a for a, _, _ in arrays}))],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    states = {r.split("|")[0]: r.split("|")[1] for r in rows}
    assert set(states) == job_ids | set(tasks), rows
    assert set(states.values()) == {"COMPLETED"}, rows
    steps = int(re.findall(r"(\d+) of (\d+) steps \(100%\) done", output)[-1][1])
    local = re.findall(r"^localrule (\w+):", output, flags=re.M)
    assert set(local) == set(LOCAL), local
    assert len(job_ids) + len(tasks) == steps - len(local)  # every other job went to SLURM
    rule_of = {
        j: r.split("|")[2].removeprefix("rule_").split("_wildcards")[0]
        for j, r in zip([r.split("|")[0] for r in rows], rows, strict=True)
    }
    for rule in ("plan", "train", "report_run"):
        assert sum(rule_of[j] == rule for j in job_ids) == 1, (rule, rule_of)
    # array tasks only run sharded rules; shards that are ready together go as one array
    assert {rule_of[t] for t in tasks} <= set(SHARDED), rule_of
    n_subjects = sum(DEMO["subjects_per_split"].values())
    expected = {"infer": math.ceil(n_subjects / SHARD_SIZE), "preprocess": 2}  # 7 labelled
    for rule, n_shards in expected.items():
        arrays_of_rule = {tasks[t] for t in tasks if rule_of[t] == rule}
        assert len(arrays_of_rule) == 1, (rule, arrays_of_rule)
        assert sum(rule_of[t] == rule for t in tasks) == n_shards >= 2
    for shard in range(expected["infer"]):  # each task ran its own shard
        assert (workdir / "results" / "inference" / f"{shard:05d}.tsv").exists()


def test_results_pass_the_local_checks(slurm_run):
    """Every subject segmented on its own grid and the test split evaluated (a few training
    steps: the Dice figures are finite, not high)."""
    workdir, _ = slurm_run
    for s in demo_subjects(DEMO):
        image = nib.load(workdir / s.image)
        seg = nib.load(workdir / "results" / "segmentations" / f"{s.subject}.nii.gz")
        assert seg.shape == image.shape
        np.testing.assert_allclose(seg.affine, image.affine, atol=1e-5)
    rows = [r for r in read_tsv(workdir / "results" / "metrics.tsv") if r["split"] == "test"]
    assert len(rows) == DEMO["subjects_per_split"]["test"]
    for c in ("organ", "shell", "tube"):
        assert all(0.0 <= float(r[f"dice_{c}"]) <= 1.0 for r in rows), c


def test_training_ran_under_srun_with_its_tasks(slurm_run):
    workdir, _ = slurm_run
    log = (workdir / "logs" / "train.log").read_text()
    assert f"× {TRAIN_TASKS} ranks (ddp)" in log, log[-2000:]
    for rank in range(TRAIN_TASKS):  # every rank a task of the one job, found through SLURM
        assert f"rank {rank} of {TRAIN_TASKS} on cpu, from the SLURM environment" in log
