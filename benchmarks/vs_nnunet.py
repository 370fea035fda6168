"""Accuracy side by side with nnU-Net v2 on one sample sheet, at the same number of gradient
steps on the same device.

From one sample sheet (train/val/test subjects with labels) this

1. converts the subjects into an nnU-Net v2 raw dataset (``imagesTr``/``labelsTr`` from train
   and val, ``imagesTs`` from test, ``dataset.json``) and fixes fold 0 to the sheet's
   train/val split (``splits_final.json``);
2. runs nnU-Net's own ``nnUNetv2_plan_and_preprocess`` (3d_fullres), ``nnUNetv2_train`` (fold
   0, a trainer of nnU-Net's default one with ``--epochs`` × ``--steps-per-epoch`` gradient
   steps: nnU-Net ships trainers that only change the epoch count, and this one also sets the
   steps per epoch) and ``nnUNetv2_predict`` (its default mirroring test-time augmentation);
3. runs cohortseg (``snakemake``, ``model.name: auto``, the same steps, ``inference.tta:
   mirror``) on the same sheet;
4. prints for both, one ``name: value unit`` per line: Dice and HD95 per class on the test
   split (computed by ``cohortseg.evaluation.metrics.dice_hd95`` for both, on each subject's own
   grid), training wall time, inference time per volume and the peak resident memory of the process
   tree (sampled every 0.2 s).

nnU-Net (``nnunetv2``, pinned below) is installed into its own virtual environment
(``--venv``), never into the project's.

    python benchmarks/vs_nnunet.py --samples demo --out results/vs_nnunet/demo
    python benchmarks/vs_nnunet.py --samples lungct --out results/vs_nnunet/lungct
    python benchmarks/vs_nnunet.py --samples /data/cohort/samples.tsv --out /scratch/vs

``--samples demo`` writes the demo phantoms (``config.yaml``'s ``demo`` section, without its
infer subjects); ``--samples lungct`` writes a synthetic cohort that is not built like the demo
(:func:`lung_ct_phantom`: thick-slice CT contrast in Hounsfield units, vessels and nodules in
lungs, 0.8 × 0.8 × 3.0 mm voxels).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import yaml

from cohortseg.core.cohort import Subject, demo_subjects, read_sample_sheet
from cohortseg.core.io import load_nifti, save_nifti
from cohortseg.evaluation.metrics import dice_hd95
from cohortseg.inputs.demo import write_demo_subject

REPO = Path(__file__).resolve().parents[1]
NNUNET = "nnunetv2==2.8.1"
TORCH = "torch==2.13.0"  # the project's pin; nnunetv2 2.8.1 accepts torch >= 2.1.2, != 2.9.*
TRAINER = "nnUNetTrainer_cohortsegBudget"
TRAINER_SOURCE = '''"""nnU-Net's default trainer with cohortseg's benchmark budget."""

import os

import torch

from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer


class nnUNetTrainer_cohortsegBudget(nnUNetTrainer):
    """COHORTSEG_EPOCHS epochs of COHORTSEG_STEPS gradient steps; everything else nnU-Net's."""

    def __init__(self, plans, configuration, fold, dataset_json, device=torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.num_epochs = int(os.environ.get("COHORTSEG_EPOCHS", "1000"))
        self.num_iterations_per_epoch = int(os.environ.get("COHORTSEG_STEPS", "250"))
        self.num_val_iterations_per_epoch = int(os.environ.get("COHORTSEG_VAL_STEPS", "50"))

    def perform_actual_validation(self, save_probabilities: bool = False):
        """Skipped: the benchmark evaluates the test split itself."""
'''
SPLITS = ("train", "val", "test")


# ------------------------------------------------------------------ cohorts


def lung_ct_phantom(
    shape: Sequence[int], spacing_mm: Sequence[float], seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A thick-slice chest-CT-like phantom: a soft-tissue body (40 HU) in air (-1000 HU) with
    two lungs (-850 HU), a branching vessel tree in each lung (class 1, +60 HU, 1-3 mm radius)
    and 1-3 nodules (class 2, +10 HU, 3-7 mm radius), Gaussian noise (sigma 40 HU). The grid
    is axial, rotated up to 10 degrees about the scanner axis, with ±5 % spacing jitter.

    Returns int16 (X, Y, Z) HU, uint8 (X, Y, Z) labels and the (4, 4) affine (mm).
    """
    rng = np.random.default_rng(seed)
    spacing = np.asarray(spacing_mm, float) * rng.uniform(0.95, 1.05, 3)
    angle = np.deg2rad(rng.uniform(-10, 10))
    rot = np.array(
        [[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]]
    )
    linear = rot @ np.diag(spacing)
    affine = np.eye(4)
    affine[:3, :3] = linear
    affine[:3, 3] = -linear @ ((np.asarray(shape, float) - 1) / 2)
    idx = np.stack(np.meshgrid(*[np.arange(n, dtype=np.float32) for n in shape], indexing="ij"))
    world = (
        np.einsum("ij,j...->i...", linear.astype(np.float32), idx) + affine[:3, 3, None, None, None]
    )
    half = np.abs(linear) @ (np.asarray(shape, float) / 2)

    def ellipsoid(centre: np.ndarray, radii: np.ndarray) -> np.ndarray:
        return (((world - centre[:, None, None, None]) / radii[:, None, None, None]) ** 2).sum(
            0
        ) <= 1

    def near_segment(a: np.ndarray, b: np.ndarray, radius: float) -> np.ndarray:
        ab = b - a
        rel = world - a[:, None, None, None]
        t = np.clip(np.einsum("i,i...->...", ab, rel) / (ab @ ab), 0, 1)
        return ((rel - t * ab[:, None, None, None]) ** 2).sum(0) <= radius**2

    image = np.full(shape, -1000.0, np.float32)
    label = np.zeros(shape, np.uint8)
    body = ellipsoid(
        np.zeros(3), np.array([0.95, 0.8, 4.0]) * np.array([half[0], half[1], half[2]])
    )
    image[body] = 40
    lungs = []
    for side in (-1, 1):
        centre = np.array([side * 0.42 * half[0], 0.0, 0.0]) + rng.uniform(-2, 2, 3)
        lung = ellipsoid(centre, np.array([0.4 * half[0], 0.62 * half[1], 3.0 * half[2]])) & body
        image[lung] = -850
        lungs.append((centre, lung))
        # a vessel tree: a trunk along z with branches, each thinner than its parent
        stack = [(centre + np.array([0, 0, -half[2]]), np.array([0, 0, 1.0]), 3.0, 0)]
        while stack:
            start, direction, radius, depth = stack.pop()
            direction = direction + rng.normal(0, 0.35, 3)
            direction /= np.linalg.norm(direction)
            end = start + direction * rng.uniform(0.5, 0.9) * half[2] / (1 + depth)
            vessel = near_segment(start, end, radius) & lung
            image[vessel] = 60
            label[vessel] = 1
            if depth < 3:
                for _ in range(2):
                    stack.append((end, direction, max(radius * 0.7, 1.0), depth + 1))
    for _ in range(rng.integers(1, 4)):
        centre, lung = lungs[rng.integers(2)]
        spot = centre + rng.uniform(-0.5, 0.5, 3) * np.array(
            [0.4 * half[0], 0.6 * half[1], 2 * half[2]]
        )
        nodule = ellipsoid(spot, np.full(3, rng.uniform(3, 7))) & lung
        image[nodule] = 10
        label[nodule] = 2
    image += rng.normal(0, 40, shape).astype(np.float32)
    return np.clip(np.rint(image), -1024, 3071).astype(np.int16), label, affine


def write_cohort(kind: str, root: Path) -> Path:
    """Write the ``demo`` or ``lungct`` cohort (train 8, val 2, test 4) and its sample sheet
    under ``root``; returns the sheet's path."""
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    demo = {**config["demo"], "subjects_per_split": {"train": 8, "val": 2, "test": 4}}
    subjects = demo_subjects(demo, root=str(root))
    rows = ["subject\timage\tlabel\tsplit"]
    for s in subjects:
        if not Path(s.image).exists():
            if kind == "demo":
                write_demo_subject(s, demo)
            else:
                seed = 1000 + int(s.subject.rsplit("-", 1)[1])
                image, label, affine = lung_ct_phantom([72, 72, 24], [0.8, 0.8, 3.0], seed)
                save_nifti(s.image, image, affine)
                save_nifti(s.label, label, affine)
        rows.append(f"{s.subject}\t{s.image}\t{s.label}\t{s.split}")
    sheet = root / "samples.tsv"
    sheet.write_text("\n".join(rows) + "\n")
    return sheet


# ------------------------------------------------------------------ measuring


def tree_rss_mb(pid: int) -> float:
    """Resident memory (MB) of a process and all its descendants, from /proc."""
    total, stack = 0, [pid]
    while stack:
        p = stack.pop()
        try:
            with open(f"/proc/{p}/status") as f:
                total += next(int(line.split()[1]) for line in f if line.startswith("VmRSS"))
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as f:
                    stack.extend(int(c) for c in f.read().split())
        except (OSError, StopIteration, ValueError):
            continue
    return total / 1024


def run_measured(cmd: Sequence[str], env: dict, log: Path) -> tuple[float, float]:
    """Run ``cmd`` (output to ``log``); returns its wall time (s) and the peak resident memory
    (MB) of its process tree. Raises if it fails."""
    print("+", " ".join(cmd), file=sys.stderr, flush=True)
    peak = 0.0
    started = time.perf_counter()
    with open(log, "a") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)
        done = threading.Event()

        def poll() -> None:
            nonlocal peak
            while not done.wait(0.2):
                peak = max(peak, tree_rss_mb(proc.pid))

        thread = threading.Thread(target=poll, daemon=True)
        thread.start()
        rc = proc.wait()
        done.set()
        thread.join()
    seconds = time.perf_counter() - started
    if rc != 0:
        raise SystemExit(f"{cmd[0]} failed (exit {rc}); see {log}")
    return seconds, peak


def evaluate(
    predictions: dict[str, Path], subjects: Sequence[Subject], n_classes: int
) -> np.ndarray:
    """(subjects, 2, classes): Dice and HD95 (mm) per test subject and foreground class."""
    rows = []
    for s in subjects:
        label, affine = load_nifti(s.label, s.subject, dtype=np.uint8)
        pred, _ = load_nifti(predictions[s.subject], s.subject, dtype=np.uint8)
        rows.append(dice_hd95(pred, label, affine, n_classes))
    return np.asarray(rows, float)


def report(tool: str, scores: np.ndarray, classes: Sequence[str], figures: dict) -> None:
    """Print the tool's figures, one ``name: value unit`` per line."""
    for i, c in enumerate(classes):
        print(f"{tool}_test_dice_{c}: {np.nanmean(scores[:, 0, i]):.4f}")
        print(f"{tool}_test_hd95_{c}: {np.nanmean(scores[:, 1, i]):.2f} mm")
    print(f"{tool}_test_dice_mean: {np.nanmean(scores[:, 0, :]):.4f}")
    for name, (value, unit) in figures.items():
        print(f"{tool}_{name}: {value:.4g} {unit}")
    sys.stdout.flush()


# ------------------------------------------------------------------ nnU-Net


def ensure_venv(venv: Path) -> Path:
    """nnU-Net's own virtual environment (created and filled on first use); its bin folder."""
    bin_dir = venv / "bin"
    if not (bin_dir / "nnUNetv2_train").exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(bin_dir / "pip"), "install", "-q", NNUNET, TORCH], check=True)
    site = subprocess.run(
        [
            str(bin_dir / "python"),
            "-c",
            "import nnunetv2, os; print(os.path.dirname(nnunetv2.__file__))",
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    trainer = Path(site) / "training/nnUNetTrainer/variants/benchmarking" / f"{TRAINER}.py"
    trainer.write_text(TRAINER_SOURCE)
    # nnU-Net imports every trainer module to find one by name; the Primus (transformer)
    # trainers import timm, which imports torchvision, whose PyPI wheel is built for CUDA and
    # cannot load beside the CPU torch (no CPU build on PyPI). The benchmark uses none of them.
    shutil.rmtree(Path(site) / "training/nnUNetTrainer/primus", ignore_errors=True)
    return bin_dir


def nnunet_raw(
    subjects: Sequence[Subject], classes: Sequence[str], channel: str, root: Path
) -> None:
    """Write the nnU-Net v2 raw dataset: train and val into imagesTr/labelsTr, test into
    imagesTs, and dataset.json."""
    for sub in ("imagesTr", "labelsTr", "imagesTs"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for s in subjects:
        images = "imagesTs" if s.split == "test" else "imagesTr"
        shutil.copyfile(s.image, root / images / f"{s.subject}_0000.nii.gz")
        if s.split != "test":
            shutil.copyfile(s.label, root / "labelsTr" / f"{s.subject}.nii.gz")
    dataset = {
        "channel_names": {"0": channel},
        "labels": {"background": 0, **{c: i + 1 for i, c in enumerate(classes)}},
        "numTraining": sum(s.split != "test" for s in subjects),
        "file_ending": ".nii.gz",
    }
    (root / "dataset.json").write_text(json.dumps(dataset, indent=2))


def run_nnunet(args: argparse.Namespace, subjects: list[Subject], classes: list[str]) -> None:
    """Plan, preprocess, train and predict with nnU-Net; print its figures."""
    bin_dir = ensure_venv(args.venv.resolve())
    work = (args.out / "nnunet").resolve()
    name = f"Dataset{args.dataset_id:03d}_{args.samples_name}"
    env = {
        **os.environ,
        "nnUNet_raw": str(work / "raw"),
        "nnUNet_preprocessed": str(work / "preprocessed"),
        "nnUNet_results": str(work / "trained"),
        "nnUNet_n_proc_DA": "1",  # one augmentation worker: a 2-core machine has no more to spare
        "nnUNet_def_n_proc": "1",
        "COHORTSEG_EPOCHS": str(args.epochs),
        "COHORTSEG_STEPS": str(args.steps_per_epoch),
        "COHORTSEG_VAL_STEPS": "2",
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
    }
    env.pop("PYTHONPATH", None)
    log = work / "nnunet.log"
    work.mkdir(parents=True, exist_ok=True)
    nnunet_raw(subjects, classes, args.channel, work / "raw" / name)
    d = str(args.dataset_id)
    run_measured(
        [
            "nnUNetv2_plan_and_preprocess",
            "-d",
            d,
            "-c",
            "3d_fullres",
            "-np",
            "1",
            "-gpu_memory_target",
            str(args.memory_budget_gb),
            "--verify_dataset_integrity",
        ],
        env,
        log,
    )
    splits = [
        {
            "train": [s.subject for s in subjects if s.split == "train"],
            "val": [s.subject for s in subjects if s.split == "val"],
        }
    ]
    (work / "preprocessed" / name / "splits_final.json").write_text(json.dumps(splits))
    plans = json.loads((work / "preprocessed" / name / "nnUNetPlans.json").read_text())
    fullres = plans["configurations"]["3d_fullres"]
    train_s, train_mb = run_measured(
        ["nnUNetv2_train", d, "3d_fullres", "0", "-tr", TRAINER, "-device", "cpu"], env, log
    )
    test = [s for s in subjects if s.split == "test"]
    pred_dir = work / "predictions"
    infer_s, infer_mb = run_measured(
        [
            "nnUNetv2_predict",
            "-i",
            str(work / "raw" / name / "imagesTs"),
            "-o",
            str(pred_dir),
            "-d",
            d,
            "-c",
            "3d_fullres",
            "-f",
            "0",
            "-tr",
            TRAINER,
            "-chk",
            "checkpoint_final.pth",
            "-device",
            "cpu",
            "-npp",
            "1",
            "-nps",
            "1",
        ],
        env,
        log,
    )
    scores = evaluate(
        {s.subject: pred_dir / f"{s.subject}.nii.gz" for s in test}, test, len(classes) + 1
    )
    print(f"nnunet_patch_size: {fullres['patch_size']} voxels")
    print(f"nnunet_spacing: {fullres['spacing']} mm")
    print(f"nnunet_batch_size: {fullres['batch_size']} patches")
    report(
        "nnunet",
        scores,
        classes,
        {
            "gradient_steps": (args.epochs * args.steps_per_epoch, "steps"),
            "train_wall_time": (train_s, "s"),
            "inference_time_per_volume": (infer_s / len(test), "s"),
            "train_peak_rss": (train_mb, "MB"),
            "inference_peak_rss": (infer_mb, "MB"),
        },
    )


# ------------------------------------------------------------------ cohortseg


def run_cohortseg(
    args: argparse.Namespace, sheet: Path, subjects: list[Subject], classes: list[str]
) -> None:
    """Train and segment with cohortseg (snakemake, model.name auto); print its figures."""
    work = (args.out / "cohortseg").resolve()
    work.mkdir(parents=True, exist_ok=True)
    overrides = {
        "samples": str(sheet.resolve()),
        "classes": classes,
        "model": {"name": args.model},
        "training": {
            "epochs": args.epochs,
            "steps_per_epoch": args.steps_per_epoch,
            "device": "cpu",
            "init_from": None,
        },
        "inference": {"splits": ["test"], "tta": "mirror", "device": "cpu"},
        "plan": {
            "normalization": "ct" if args.channel == "CT" else None,
            "memory_budget_gb": args.memory_budget_gb,  # nnU-Net plans with the same
        },
    }
    overrides["training"]["preset"] = args.preset  # not auto: the --model given is kept
    if args.preset != "demo":  # the preset's budget would replace training's where at default
        budget = {"epochs": args.epochs, "steps_per_epoch": args.steps_per_epoch}
        overrides["presets"] = {args.preset: {"training": budget}}
    configfile = work / "benchmark.yaml"
    configfile.write_text(yaml.safe_dump(overrides))
    env = {**os.environ, "PYTHONPATH": f"{REPO / 'src'}:{os.environ.get('PYTHONPATH', '')}"}
    snakemake = [
        str(Path(sys.executable).parent / "snakemake"),
        "-s",
        str(REPO / "Snakefile"),
        "-d",
        str(work),
        "--configfile",
        str(configfile),
        "--cores",
        "2",
    ]
    log = work / "cohortseg.log"
    run_measured([*snakemake, "results/model/best.pt"], env, log)
    run_measured([*snakemake, "results/metrics.tsv"], env, log)
    bench = work / "logs" / "benchmarks"
    train = read_benchmark(bench / "train.tsv")
    infers = [read_benchmark(p) for p in sorted((bench / "infer").glob("*.tsv"))]
    test = [s for s in subjects if s.split == "test"]
    preds = {s.subject: work / "results" / "segmentations" / f"{s.subject}.nii.gz" for s in test}
    scores = evaluate(preds, test, len(classes) + 1)
    plan = json.loads((work / "results" / "plan" / "plan.json").read_text())
    print(f"cohortseg_model: {args.model}, training.preset {args.preset}")
    print(f"cohortseg_patch_size: {plan['patch_size']} voxels")
    print(f"cohortseg_spacing: {plan['target_spacing_mm']} mm")
    if "network" in plan:
        print(f"cohortseg_network: {json.dumps(plan['network'])}")
    report(
        "cohortseg",
        scores,
        classes,
        {
            "gradient_steps": (args.epochs * args.steps_per_epoch, "steps"),
            "train_wall_time": (train["s"], "s"),
            "inference_time_per_volume": (sum(b["s"] for b in infers) / len(test), "s"),
            "train_peak_rss": (train["max_rss"], "MB"),
            "inference_peak_rss": (max(b["max_rss"] for b in infers), "MB"),
        },
    )


def read_benchmark(path: Path) -> dict[str, float]:
    """A Snakemake ``benchmark:`` record: seconds ``s`` and ``max_rss`` (MB) of the job."""
    header, values = path.read_text().splitlines()[:2]
    row = dict(zip(header.split("\t"), values.split("\t"), strict=True))
    return {"s": float(row["s"]), "max_rss": float(row["max_rss"])}


# ------------------------------------------------------------------ main


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--samples", required=True, help="demo, lungct, or a sample sheet (TSV)")
    parser.add_argument("--out", type=Path, required=True, help="working folder")
    parser.add_argument("--classes", nargs="+", help="class names (default: the cohort's)")
    parser.add_argument("--channel", default=None, help="nnU-Net channel name: MRI (z-score) or CT")
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--steps-per-epoch", type=int, default=16)
    parser.add_argument("--model", default="auto", help="cohortseg's model.name")
    parser.add_argument("--preset", default="demo", help="cohortseg's training.preset")
    parser.add_argument(
        "--memory-budget-gb",
        type=float,
        default=8.0,
        help="the budget both plan their patch and batch with (cohortseg's plan.memory_budget_gb,"
        " nnU-Net's -gpu_memory_target; its default 8)",
    )
    parser.add_argument("--venv", type=Path, default=REPO / "resources" / "nnunet-venv")
    parser.add_argument("--dataset-id", type=int, default=917)
    parser.add_argument("--only", choices=["nnunet", "cohortseg"], help="run one side only")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.samples in ("demo", "lungct"):
        sheet = write_cohort(args.samples, (args.out / "cohort").resolve())
        args.samples_name = args.samples
        default_classes = (
            ["organ", "shell", "tube"] if args.samples == "demo" else ["vessel", "nodule"]
        )
        args.channel = args.channel or ("MRI" if args.samples == "demo" else "CT")
    else:
        sheet = Path(args.samples)
        args.samples_name = "cohort"
        default_classes = None
        args.channel = args.channel or "MRI"
    classes = args.classes or default_classes
    if not classes:
        raise SystemExit("--classes is needed with a sample sheet")
    subjects = [s for s in read_sample_sheet(sheet) if s.split in SPLITS]
    counts = {split: sum(s.split == split for s in subjects) for split in SPLITS}
    print(f"cohort: {args.samples}: " + ", ".join(f"{n} {k}" for k, n in counts.items()))
    if args.only in (None, "nnunet"):
        run_nnunet(args, subjects, classes)
    if args.only in (None, "cohortseg"):
        run_cohortseg(args, sheet, subjects, classes)


if __name__ == "__main__":
    main()
