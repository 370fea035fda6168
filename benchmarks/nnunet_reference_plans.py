"""nnU-Net 2.8.1's own plans for several datasets' fingerprints: the reference that cohortseg's
planning is tested against (``tests/preprocessing/test_configurations.py``).

    python benchmarks/nnunet_reference_plans.py   # tests/preprocessing/data/nnunet_plans_*.json

A dataset here is what the planner reads of it: every training subject's spacing (mm) and
shape (voxels), in cohortseg's canonical (x, y, z) order. Most are synthetic, drawn from a
seeded generator after a kind of cohort (isotropic brain MRI, thick-slice prostate MRI, CT,
cine MRI with a few thin-slice subjects, sagittal knee MRI, 2D radiographs); ``demo`` and
``demo_2d`` are cohortseg's fingerprints of the demo phantoms that ``config.yaml``'s ``demo``
section makes (the train split, as the plan job sees it).

nnU-Net (``nnunetv2``, pinned in ``benchmarks/vs_nnunet.py``, in the same virtual environment
of its own) then plans each from a ``dataset_fingerprint.json`` in its own axis order (z, y, x:
SimpleITK's reading of NIfTI) with ``ExperimentPlanner(dataset, gpu_memory_target_in_gb=budget)
.plan_experiment()``, for each memory budget in ``BUDGETS_GB``. Each output file holds the
fingerprint, and per budget nnU-Net's configurations mapped back to canonical axes (spacing,
median shape, patch, batch size, strides, kernel sizes, features, batch_dice and
``static_estimate_VRAM_usage`` of the planned network). It prints one ``name: value unit`` line
per dataset, budget and configuration.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "tests" / "preprocessing" / "data"
BUDGETS_GB = (0.25, 8.0, 24.0)  # the CPU budget (config.yaml's default), nnU-Net's 8 and 24 GB


# ------------------------------------------------------------------ the datasets (project side


def _synthetic(seed: int, n: int, spacing, shape, classes: int, channel: str = "MRI") -> dict:
    """Subjects drawn around a spacing and shape: each axis's ``(low, high)`` or one value;
    spacings in 0.005 mm steps, shapes whole."""
    import numpy as np

    rng = np.random.default_rng(seed)

    def draw(spec, step):
        if isinstance(spec, list):  # a list of choices
            return float(rng.choice(spec))
        if isinstance(spec, tuple):
            return round(float(rng.uniform(*spec)) / step) * step
        return spec

    spacings = [[round(draw(s, 0.005), 6) for s in spacing] for _ in range(n)]
    shapes = [[int(draw(s, 1)) for s in shape] for _ in range(n)]
    return {"spacings_mm": spacings, "shapes": shapes, "classes": classes, "channel": channel}


def _cine(seed: int) -> dict:
    """Cine MRI after ACDC: 10 mm slices in most subjects, 1.2 mm in three, so that the 10th
    percentile of the slice spacing is finer than the in-plane spacing (nnU-Net's clamp)."""
    data = _synthetic(seed, 20, [(1.4, 1.6), (1.4, 1.6), 10.0], [(200, 240), (220, 260), 10], 3)
    for k in (3, 9, 15):
        data["spacings_mm"][k][2] = 1.2
        data["shapes"][k][2] = 80
    return data


def _demo(dims: int) -> dict:
    """cohortseg's fingerprint of the demo phantoms' train split."""
    import yaml

    from cohortseg.core.cohort import demo_subjects
    from cohortseg.inputs.demo import write_demo_subject
    from cohortseg.preprocessing.plan import fingerprint

    config = yaml.safe_load((REPO / "config.yaml").read_text())
    demo = {**config["demo"], "dims": dims, "format": "nifti"}
    with tempfile.TemporaryDirectory() as root:
        subjects = [s for s in demo_subjects(demo, root) if s.split == "train"]
        for s in subjects:
            write_demo_subject(s, demo)
        fp = fingerprint(subjects)
    return {
        "spacings_mm": fp["spacings_mm"],
        "shapes": fp["shapes"],
        "classes": len(config["classes"]),
        "channel": "MRI",
    }


def datasets() -> dict[str, dict]:
    """Name → ``spacings_mm``, ``shapes`` (canonical), ``classes`` (foreground) and
    ``channel`` (nnU-Net's channel name: MRI for z-scores, CT for its CT normalisation)."""
    return {
        "brain_mri": _synthetic(1, 20, [1.0, 1.0, 1.0], [(150, 170), (182, 202), (150, 170)], 3),
        "prostate_mri": _synthetic(
            2,
            32,
            [(0.55, 0.65), (0.55, 0.65), [3.0, 3.6, 3.6, 3.6, 4.0]],
            [(256, 384), (256, 384), (15, 24)],
            2,
        ),
        "ct": _synthetic(
            3,
            30,
            [(0.7, 0.9), (0.7, 0.9), [2.5, 2.5, 2.5, 2.0, 3.0]],
            [512, 512, (150, 250)],
            4,
            "CT",
        ),
        "cine_mri": _cine(4),
        "knee_mri": _synthetic(5, 16, [0.7, 0.36, 0.36], [160, 384, 384], 4),
        "radiograph_2d": _synthetic(
            6, 40, [(0.14, 0.16), (0.14, 0.16), 1.0], [(1800, 2200), (2200, 2600), 1], 2
        ),
        "demo": _demo(3),
        "demo_2d": _demo(2),
    }


# ------------------------------------------------------------------ nnU-Net's side (its venv)


def _nnunet_plans(index: int, name: str, data: dict, budget_gb: float, root: Path) -> dict:
    """nnU-Net's ExperimentPlanner on one fingerprint; its configurations on canonical axes."""
    import numpy as np

    os.environ["nnUNet_raw"] = str(root / "raw")
    os.environ["nnUNet_preprocessed"] = str(root / "preprocessed")
    os.environ.setdefault("nnUNet_results", str(root / "results"))
    from nnunetv2.experiment_planning.experiment_planners.default_experiment_planner import (
        ExperimentPlanner,
    )

    dataset = f"Dataset{900 + index:03d}_{name}"
    raw, pre = root / "raw" / dataset, root / "preprocessed" / dataset
    raw.mkdir(parents=True, exist_ok=True)
    pre.mkdir(parents=True, exist_ok=True)
    n = len(data["shapes"])
    labels = {"background": 0, **{f"class{i + 1}": i + 1 for i in range(data["classes"])}}
    (raw / "dataset.json").write_text(
        json.dumps(
            {
                "channel_names": {"0": data["channel"]},
                "labels": labels,
                "numTraining": n,
                "file_ending": ".nii.gz",
                "overwrite_image_reader_writer": "SimpleITKIO",
                "dataset": {
                    f"case{k:03d}": {
                        "images": [f"imagesTr/case{k:03d}_0000.nii.gz"],
                        "label": f"labelsTr/case{k:03d}.nii.gz",
                    }
                    for k in range(n)
                },
            }
        )
    )
    intensity = {"max": 1.0, "mean": 0.5, "median": 0.5, "min": 0.0, "percentile_00_5": 0.0,
                 "percentile_99_5": 1.0, "std": 0.2}  # fmt: skip
    (pre / "dataset_fingerprint.json").write_text(
        json.dumps(
            {  # nnU-Net's axes: SimpleITK's (z, y, x), the canonical order reversed
                "spacings": [s[::-1] for s in data["spacings_mm"]],
                "shapes_after_crop": [s[::-1] for s in data["shapes"]],
                "median_relative_size_after_cropping": 1.0,
                "foreground_intensity_properties_per_channel": {"0": intensity},
            }
        )
    )
    with contextlib.redirect_stdout(sys.stderr):  # its progress, away from the figures
        planner = ExperimentPlanner(dataset, gpu_memory_target_in_gb=budget_gb)
        plans = planner.plan_experiment()
    forward = plans["transpose_forward"]
    # canonical axis of each of nnU-Net's transposed axes: (z, y, x) is canonical (2, 1, 0)
    canonical_of = [2 - a for a in forward]

    def canonical(values, axes, fill):
        out = [fill] * 3
        for value, a in zip(values, axes, strict=True):
            out[a] = value
        return out

    out = {"transpose_forward": forward}
    for config, plan in plans["configurations"].items():
        if "patch_size" not in plan:  # 3d_cascade_fullres inherits 3d_fullres
            out[config] = {key: plan[key] for key in plan}
            continue
        arch = plan["architecture"]["arch_kwargs"]
        axes = canonical_of if len(plan["patch_size"]) == 3 else canonical_of[1:]
        estimate = planner.static_estimate_VRAM_usage(
            tuple(plan["patch_size"]),
            1,
            len(labels),
            plan["architecture"]["network_class_name"],
            arch,
            plan["architecture"]["_kw_requires_import"],
        )
        # a 2D plan lists the in-plane axes only: its slice axis has no spacing (None), 1 voxel
        spacing = canonical(plan["spacing"], axes, None)
        median = canonical(plan["median_image_size_in_voxels"], axes, 1)
        out[config] = {
            "target_spacing_mm": [None if s is None else float(s) for s in spacing],
            "median_shape": [float(m) for m in median],
            "patch_size": [int(p) for p in canonical(plan["patch_size"], axes, 1)],
            "batch_size": int(plan["batch_size"]),
            "strides": [canonical(s, axes, 1) for s in arch["strides"]],
            "kernel_size": [canonical(k, axes, 1) for k in arch["kernel_sizes"]],
            "filters": list(arch["features_per_stage"]),
            "estimate": int(np.int64(estimate)),
            "batch_dice": bool(plan["batch_dice"]),
        }
        if "next_stage" in plan:
            out[config]["next_stage"] = plan["next_stage"]
    return out


def run_nnunet(specs: Path, out: Path) -> None:
    """In nnU-Net's environment: plan every dataset of ``specs`` at every budget; write
    ``out/nnunet_plans_{name}.json`` and print the figures."""
    from importlib.metadata import version

    import nnunetv2  # noqa: F401 - fail early outside its environment

    out.mkdir(parents=True, exist_ok=True)
    for index, (name, data) in enumerate(json.loads(specs.read_text()).items()):
        result = {
            "dataset": name,
            "nnunetv2": version("nnunetv2"),
            "planner": "ExperimentPlanner (default_experiment_planner.py)",
            "fingerprint": data,
            "plans": {},
        }
        for budget in BUDGETS_GB:
            with tempfile.TemporaryDirectory() as root:
                plans = _nnunet_plans(index, name, data, budget, Path(root))
            result["plans"][f"{budget:g}"] = plans
            for config, plan in plans.items():
                if isinstance(plan, dict) and "patch_size" in plan:
                    patch = "x".join(map(str, plan["patch_size"]))
                    print(f"{name}_{budget:g}gb_{config}_patch: {patch} voxels")
                    print(f"{name}_{budget:g}gb_{config}_batch_size: {plan['batch_size']} patches")
        path = out / f"nnunet_plans_{name}.json"
        path.write_text(json.dumps(result, indent=1) + "\n")
        sys.stdout.flush()


# ------------------------------------------------------------------ entry point


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--venv", type=Path, default=REPO / "resources" / "nnunet-venv")
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--nnunet", type=Path, help=argparse.SUPPRESS)  # the inner run's specs
    args = parser.parse_args()
    if args.nnunet:
        run_nnunet(args.nnunet, args.out)
        return
    sys.path.insert(0, str(Path(__file__).parent))
    from vs_nnunet import ensure_venv

    bin_dir = ensure_venv(args.venv.resolve())
    with tempfile.TemporaryDirectory() as tmp:
        specs = Path(tmp) / "datasets.json"
        specs.write_text(json.dumps(datasets()))
        command = [
            str(bin_dir / "python"),
            __file__,
            "--nnunet",
            str(specs),
            "--out",
            str(args.out),
        ]
        subprocess.run(command, check=True, env={**os.environ, "PYTHONPATH": ""})


if __name__ == "__main__":
    main()
