"""Federated against central training on a 3-site demo cohort, with the same total number of
gradient steps.

The demo's phantoms are split into three sites whose scanners differ: each site's images are
scaled by its own intensity factor (1.0, 1.6 and 0.6), so the sites' data differ as hospitals'
do. Both runs use the whole workflow on the same sample sheet:

- central: ``training.backend: single``, ``epochs × steps_per_epoch`` steps on all sites' patches,
  validated every 3 epochs (as many validations as the federated run's rounds);
- federated: ``training.backend: federated`` (a real SuperLink and one SuperNode per site on
  localhost), ``rounds × local_steps`` steps at each of the 3 sites, FedAvg by default — the
  same number of gradient steps in all, ``rounds × local_steps × 3 = epochs × steps_per_epoch``.

Prints ``name: value unit`` lines: both runs' mean test Dice (the mean over classes of the
mean over the test subjects of all sites) and its difference, both training jobs' wall times,
the federated rounds' mean wall time and the weights sent to and returned by the sites per
round (the payload; Flower's message framing adds little to it). Exit status 0 when the
federated model's mean test Dice is within ``--tolerance`` (0.03) of central training's.

    python benchmarks/federated.py                     # demo sizes: 48 × 16 central steps
    python benchmarks/federated.py --tiny              # small volumes and few steps (a check)
    python benchmarks/federated.py --central-dice 0.9345   # federated only, against that figure
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import yaml

from cohortseg.core.io import read_tsv, save_nifti
from cohortseg.inputs.demo import demo_phantom

REPO = Path(__file__).resolve().parents[1]
SITES = {"north": 1.0, "south": 1.6, "west": 0.6}  # site → intensity scale of its scanner
SPLITS = ["train"] * 4 + ["val"] + ["test"] * 2  # per site
LIGHT_REPORT = {  # the report's extras on few subjects: they are not what is compared
    "robustness_subjects": 1,
    "robustness_strengths": [1.0],
    "qc_sample": 2,
    "qc_worst": 1,
    "qc_unusual": 1,
}


def site_cohort(root: Path, shape: list[int]) -> Path:
    """Write the 3-site sample sheet (``site`` column) and its images and labels."""
    rows = ["subject\timage\tlabel\tsplit\tsite"]
    k = 0
    for site, scale in SITES.items():
        for split in SPLITS:
            image, label, affine = demo_phantom(shape, [1.7, 1.7, 2.4], seed=k)
            save_nifti(root / f"img/s{k}.nii.gz", (image * scale).astype(np.int16), affine)
            save_nifti(root / f"lab/s{k}.nii.gz", label, affine)
            rows.append(f"sub-{k:03d}\timg/s{k}.nii.gz\tlab/s{k}.nii.gz\t{split}\t{site}")
            k += 1
    (root / "samples.tsv").write_text("\n".join(rows) + "\n")
    return root / "samples.tsv"


def snakemake(workdir: Path, config: dict) -> None:
    """The whole workflow in ``workdir`` with ``config`` as an extra config file."""
    workdir.mkdir(parents=True, exist_ok=True)
    configfile = workdir / "benchmark.yaml"
    configfile.write_text(yaml.safe_dump(config))
    bin_dir = Path(sys.executable).parent
    cmd = [str(bin_dir / "snakemake"), "-s", str(REPO / "Snakefile"), "-d", str(workdir)]
    cmd += ["--configfile", str(REPO / "config.yaml"), str(configfile), "--cores", "all"]
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stderr[-4000:]}")


def test_dice(workdir: Path) -> float:
    """Mean over classes of the mean test-split Dice (``results/metrics.tsv``)."""
    rows = [r for r in read_tsv(workdir / "results/metrics.tsv") if r["split"] == "test"]
    columns = [c for c in rows[0] if c.startswith("dice_")]
    return float(np.mean([np.mean([float(r[c]) for r in rows]) for c in columns]))


def train_seconds(workdir: Path) -> float:
    """Wall time of the training job (its ``benchmark:`` record)."""
    return float(read_tsv(workdir / "logs/benchmarks/train.tsv")[0]["s"])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tiny", action="store_true", help="small volumes and few steps")
    parser.add_argument("--rounds", type=int, help="default 16 (tiny: 2)")
    parser.add_argument("--local-steps", type=int, help="default 16 (tiny: 2)")
    parser.add_argument("--tolerance", type=float, default=0.03, help="of mean test Dice")
    parser.add_argument("--workdir", type=Path, help="default: a temporary folder, removed")
    parser.add_argument("--server-learning-rate", type=float, default=1.0, help="FedAvgM's")
    parser.add_argument("--keep-optimizer-state", action="store_true", help="at each site")
    parser.add_argument(
        "--central-dice",
        type=float,
        help="skip the central run and compare with this mean test Dice of an earlier one with"
        " the same settings (central training on the CPU is deterministic for a seed)",
    )
    args = parser.parse_args()
    rounds = args.rounds or (2 if args.tiny else 16)
    local_steps = args.local_steps or (2 if args.tiny else 16)
    total = rounds * local_steps * len(SITES)
    shape = [32, 32, 24] if args.tiny else [56, 56, 40]
    work = args.workdir or Path(tempfile.mkdtemp(prefix="cohortseg-federated-"))
    try:
        sheet = site_cohort(work / "data", shape)
        common = {"samples": str(sheet), "report": LIGHT_REPORT}
        if args.tiny:
            common.update(patches={"per_subject": 6}, plan={"max_patch_size": [32, 32, 32]})
        # validated as often as the federated model (every len(SITES) epochs: the same steps
        # as one round), so that both choose their best checkpoint among as many
        central = {
            **common,
            "training": {"backend": "single", "epochs": len(SITES) * rounds,
                         "steps_per_epoch": local_steps, "preset": "demo",
                         "val_every": len(SITES)},
        }  # fmt: skip
        federated = {
            **common,
            "training": {"backend": "federated", "preset": "demo"},
            "federated": {
                "rounds": rounds,
                "local_steps": local_steps,
                "server_learning_rate": args.server_learning_rate,
                "keep_optimizer_state": args.keep_optimizer_state,
            },
        }
        if args.central_dice is None:
            snakemake(work / "central", central)
        snakemake(work / "federated", federated)
        rounds_log = read_tsv(work / "federated/results/model/training_log.tsv")
        dice_federated = test_dice(work / "federated")
        given = args.central_dice is not None
        dice_central = args.central_dice if given else test_dice(work / "central")
        print(f"sites: {len(SITES)} sites")
        print(f"server_learning_rate: {args.server_learning_rate:g} (1: FedAvg)")
        print(f"keep_optimizer_state: {str(args.keep_optimizer_state).lower()} bool")
        print(f"gradient_steps: {total} steps (both)")
        print(f"central_test_dice: {dice_central:.4f} mean Dice{' (given)' if given else ''}")
        print(f"federated_test_dice: {dice_federated:.4f} mean Dice")
        print(f"dice_difference: {dice_federated - dice_central:+.4f} mean Dice")
        if not given:
            print(f"central_train_time: {train_seconds(work / 'central'):.1f} s")
        print(f"federated_train_time: {train_seconds(work / 'federated'):.1f} s")
        print(f"round_time: {np.mean([float(r['round_s']) for r in rounds_log]):.1f} s")
        print(f"payload_per_round: {float(rounds_log[-1]['payload_mb']):.2f} MiB")
        ok = abs(dice_federated - dice_central) <= args.tolerance
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)
    raise SystemExit(0 if ok else 1)


if __name__ == "__main__":
    main()
