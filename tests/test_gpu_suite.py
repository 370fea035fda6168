"""The GPU proof's script runs end to end on the CPU at tiny sizes, so that it cannot break
unseen before a GPU is there (benchmarks/gpu_suite.sh --device cpu --tiny); its federated
round, asked for CUDA where there is none, says it skipped."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.slow

PARTS = (
    "infer_default",
    "infer_wide",
    "train_patch",
    "train_whole_default",
    "train_whole_wide",
    "ddp_step",
    "federated_round",
    "host_budget",
)


def test_gpu_suite_runs_every_part_on_the_cpu(tmp_path):
    env = {**os.environ, "PYTHON": sys.executable}
    proc = subprocess.run(
        [str(REPO / "benchmarks" / "gpu_suite.sh"), str(tmp_path), "--device", "cpu", "--tiny"],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    figures = dict(
        line.split(": ", 1) for line in (tmp_path / "figures.txt").read_text().splitlines()
    )
    for part in PARTS:
        assert figures[f"{part}.exit_status"] == "0", part
        assert (tmp_path / f"{part}.log").exists()
    for name in (
        "infer_default.cohortseg_volumes_per_s",
        "infer_default.monai_volumes_per_s",
        "infer_default.network_only_volumes_per_s",
        "infer_default.cohortseg_share_of_network_limit",
        "infer_default.agreement_mean_dice",
        "train_patch.full_loop_over_device_step",
        "train_whole_wide.full_loop_step_time",
        "host_budget.host_per_volume",
    ):
        assert name in figures, name
    assert figures["ddp_step.ddp_step_ok"] == "true"
    assert figures["federated_round.site_device"] == "cpu"
    assert figures["federated_round.batches_on_device"] == "true"
    assert figures["federated_round.round_ok"] == "true"
    assert figures["suite.exit_status"] == "0"


def test_the_federated_round_asked_for_cuda_without_a_gpu_skips():
    import torch

    if torch.cuda.is_available():
        pytest.skip("there is a GPU: the suite's federated round runs on it")
    proc = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "federated_round.py"), "--device", "cuda"],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO / "src")},
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.splitlines() == ["skipped: no_cuda_device"]
