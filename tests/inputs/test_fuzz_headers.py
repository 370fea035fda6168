"""The header fuzzer (benchmarks/fuzz_headers.py) in small: 50 mutated files, each a named
problem or a segmentation on its image's grid, none a crash; and the fuzzer's own judgement (a
crash or a wrong grid is counted as one)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import numpy as np
import pytest

from cohortseg.core.io import save_nifti
from tests.conftest import REPO

SCRIPT = REPO / "benchmarks" / "fuzz_headers.py"


def load_fuzzer():
    spec = importlib.util.spec_from_file_location("fuzz_headers", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_50_mutated_headers_give_named_problems_or_correct_segmentations_only():
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--n", "50", "--seed", "0"],
        capture_output=True,
        text=True,
        timeout=900,  # a net for a hang: about 10 s on 2 loaded cores, mostly importing torch
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    figures = dict(line.split(": ", 1) for line in proc.stdout.splitlines() if ": " in line)
    assert figures["fuzz_cases"] == "50 files"
    assert figures["fuzz_crashes"] == "0 files", proc.stderr[-4000:]
    assert figures["fuzz_refused_after_validation"] == "0 files", proc.stderr[-4000:]
    refused = int(figures["fuzz_refused_by_validation"].split()[0])
    segmented = int(figures["fuzz_segmented"].split()[0])
    assert refused + segmented == 50 and refused > 0 and segmented > 0
    assert figures["fuzz_seconds"].endswith(" s")


def test_the_fuzzer_counts_an_exception_as_a_crash_and_a_named_problem_as_none(
    tmp_path, monkeypatch
):
    fuzzer = load_fuzzer()
    net, inference, validation = fuzzer._setup()
    bases = fuzzer.base_files(tmp_path)
    path, _ = fuzzer.make_case(0, 0, bases, tmp_path)
    (tmp_path / "out").mkdir()

    def run() -> str:
        return fuzzer.run_case(path, net, inference, validation, tmp_path / "out")[0]

    assert run() in ("refused", "segmented")
    import cohortseg.inputs.validate as validate

    def broken(*args, **kwargs):
        raise ValueError("a bug")

    monkeypatch.setattr(validate, "validate_subject", broken)
    assert run() == "crash"


def test_the_fuzzer_counts_a_segmentation_off_its_images_grid_as_a_crash(tmp_path):
    fuzzer = load_fuzzer()
    affine = np.diag([2.0, 2.0, 3.0, 1.0])
    save_nifti(tmp_path / "image.nii", np.zeros((4, 5, 6), np.int16), affine)
    save_nifti(tmp_path / "seg.nii.gz", np.zeros((4, 5, 6), np.uint8), affine)
    assert fuzzer._check_geometry(tmp_path / "image.nii", tmp_path / "seg.nii.gz")[0] == "segmented"
    moved = affine.copy()
    moved[0, 3] = 0.5
    save_nifti(tmp_path / "seg.nii.gz", np.zeros((4, 5, 6), np.uint8), moved)
    assert fuzzer._check_geometry(tmp_path / "image.nii", tmp_path / "seg.nii.gz")[0] == "crash"
    save_nifti(tmp_path / "seg.nii.gz", np.zeros((4, 5, 5), np.uint8), affine)
    assert fuzzer._check_geometry(tmp_path / "image.nii", tmp_path / "seg.nii.gz")[0] == "crash"
