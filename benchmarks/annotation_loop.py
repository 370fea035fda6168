"""The annotation loop on the demo cohort, end to end: train v1 → review package → a reviewer's
correction → fine-tune → v2.

1. ``snakemake`` on the demo (one unlabelled subject listed in ``review.subjects``): model v1,
   segmentations, the review package ``results/review/``.
2. The reviewer's correction, as 3D Slicer would save it: the review package's ``.seg.nrrd`` of
   that subject with its voxels replaced by the true label (the phantom's) and its segments
   renumbered (Slicer keeps names, not values), into ``corrections/``.
3. ``snakemake`` again: the correction is checked and becomes a training subject, the current
   model is fine-tuned (``training.init_from: auto``) into v2, the cohort is segmented again.
4. A dry run: nothing left to do.

Prints ``name: value unit`` lines: the steps and seconds of training from scratch (v1) and of
the fine-tuning (v2), the mean Dice of v1 and of v2 on the corrected subject (against the
correction), both runs' wall times. Exit status 0 when v2's Dice on the corrected subject is
higher than v1's and the fine-tuning took fewer steps than training from scratch.

    python benchmarks/annotation_loop.py                # the default demo and training
    python benchmarks/annotation_loop.py --tiny         # a small demo and network (the test)
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nrrd
import numpy as np
import torch
import yaml

from cohortseg.core.cohort import demo_subjects
from cohortseg.core.io import load_nifti, read_tsv

REPO = Path(__file__).resolve().parents[1]
CLASSES = yaml.safe_load((REPO / "config.yaml").read_text())["classes"]
TINY = {
    "demo": {
        "subjects_per_split": {"train": 4, "val": 1, "test": 1, "infer": 2},
        "shape": [40, 40, 32],
    },
    "model": {"channels": [8, 16, 32], "strides": [2, 2], "num_res_units": 0},
    "training": {
        "epochs": 6,
        "steps_per_epoch": 8,
        "fine_tuning": {"epochs": 2, "learning_rate": 0.005},
    },
    "patches": {"per_subject": 12},
    "report": {"qc_sample": 1, "qc_worst": 1, "qc_unusual": 1},
}

TINY_TARGETS = ["results/review/review.tsv", "results/metrics.tsv", "results/models/versions.tsv"]


def snakemake(workdir: Path, configfile: Path, *args: str) -> subprocess.CompletedProcess:
    """``snakemake`` on the repository's workflow in ``workdir``; raises if it fails."""
    cmd = [
        str(Path(sys.executable).parent / "snakemake"),
        *("-s", str(REPO / "Snakefile"), "-d", str(workdir)),
        *args,  # before --configfile, which takes every word after it
        *("--configfile", str(configfile)),
    ]
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def mean_dice(pred: np.ndarray, truth: np.ndarray) -> float:
    """Mean Dice over the foreground classes."""
    scores = []
    for c in range(1, len(CLASSES) + 1):
        both = np.sum(pred == c) + np.sum(truth == c)
        scores.append(2 * np.sum((pred == c) & (truth == c)) / max(1, both))
    return float(np.mean(scores))


def correct_in_slicer(review_seg: Path, truth: np.ndarray, out: Path) -> None:
    """What a reviewer saves from 3D Slicer: the review's segmentation, voxels corrected to
    ``truth``, segments renumbered in reverse (Slicer keeps each segment's name)."""
    _, header = nrrd.read(str(review_seg))
    n = len(CLASSES)
    data = np.where(truth > 0, n + 1 - truth, 0).astype(np.uint8)
    for k in range(n):
        header[f"Segment{k}_LabelValue"] = str(n - k)
        header[f"Segment{k}_ID"] = f"Segment_{n - k}"
    out.parent.mkdir(parents=True, exist_ok=True)
    nrrd.write(str(out), data, header)


def trained_steps(workdir: Path) -> int:
    """Optimisation steps of the model the last run trained (``results/model/last.pt``)."""
    return int(torch.load(workdir / "results/model/last.pt", weights_only=False)["global_step"])


def train_seconds(workdir: Path) -> float:
    """Wall time of the last training job (its ``benchmark:`` record)."""
    return float(read_tsv(workdir / "logs/benchmarks/train.tsv")[0]["s"])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tiny", action="store_true", help="small demo and network")
    parser.add_argument("--workdir", type=Path, help="default: a temporary folder, removed")
    parser.add_argument("--cores", type=int, default=2)
    args = parser.parse_args()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="cohortseg-loop-"))
    workdir.mkdir(parents=True, exist_ok=True)
    config = dict(TINY) if args.tiny else {}
    # --tiny (the test) stops at what the loop needs: the review package, the metrics and the
    # model versions, not the report's extras
    targets = TINY_TARGETS if args.tiny else []
    demo = {**yaml.safe_load((REPO / "config.yaml").read_text())["demo"], **config.get("demo", {})}
    subject = [s for s in demo_subjects(demo) if s.split == "infer"][-1].subject
    config["review"] = {"subjects": [subject]}
    configfile = workdir / "loop.yaml"
    configfile.write_text(yaml.safe_dump(config))
    try:
        started = time.perf_counter()
        snakemake(workdir, configfile, *targets, "--cores", str(args.cores))
        first_wall = time.perf_counter() - started
        scratch_steps, scratch_s = trained_steps(workdir), train_seconds(workdir)
        review = {r["subject"]: r for r in read_tsv(workdir / "results/review/review.tsv")}
        assert subject in review, f"{subject} is not in the review package"
        truth, _ = load_nifti(workdir / f"resources/demo/labels/{subject}.nii.gz", dtype=np.uint8)
        v1, _ = load_nifti(workdir / f"results/segmentations/{subject}.nii.gz", dtype=np.uint8)
        correction = workdir / f"corrections/{subject}.seg.nrrd"
        correct_in_slicer(workdir / review[subject]["segmentation"], truth, correction)

        started = time.perf_counter()
        snakemake(workdir, configfile, *targets, "--cores", str(args.cores))
        second_wall = time.perf_counter() - started
        tune_steps, tune_s = trained_steps(workdir), train_seconds(workdir)
        v2, _ = load_nifti(workdir / f"results/segmentations/{subject}.nii.gz", dtype=np.uint8)
        settled = "Nothing to be done" in snakemake(workdir, configfile, *targets, "-n").stdout
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    dice_v1, dice_v2 = mean_dice(v1, truth), mean_dice(v2, truth)
    print(f"corrected_subject: {subject}")
    print(f"scratch_steps: {scratch_steps} steps")
    print(f"fine_tune_steps: {tune_steps} steps")
    print(f"scratch_train_time: {scratch_s:.1f} s")
    print(f"fine_tune_train_time: {tune_s:.1f} s")
    print(f"dice_v1_corrected_subject: {dice_v1:.4f} mean Dice")
    print(f"dice_v2_corrected_subject: {dice_v2:.4f} mean Dice")
    print(f"first_run_wall: {first_wall:.1f} s")
    print(f"second_run_wall: {second_wall:.1f} s")
    print(f"nothing_to_do_after: {str(settled).lower()} bool")
    sys.exit(0 if dice_v2 > dice_v1 and tune_steps < scratch_steps and settled else 1)


if __name__ == "__main__":
    main()
