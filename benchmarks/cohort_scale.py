"""The real workflow (not a dry run) on a large synthetic cohort of tiny volumes: what the
orchestration costs per subject when the imaging work is negligible.

Writes a sample sheet of ``--train`` + ``--val`` labelled and ``--infer`` unlabelled subjects
(``--shape`` voxels each, demo phantoms, under deeply nested folders so that every path is
about ``--path-length`` characters), then runs ``snakemake --cores N`` on it with the default
configuration except a tiny network and training budget, pseudonymised ids and a pseudonym
mapping file. Prints one ``name: value unit`` line per figure: the wall time of the whole run,
for each rule its jobs, the sum of their wall times and CPU times (Snakemake's ``benchmark:``
records) and the wall-clock span from its first job's start to its last job's end, and the
orchestration overhead per subject: the core-seconds of the run (wall × cores) not spent on a
job's CPU time, over the subjects (scheduling, job start-up waits and idle cores).

    python benchmarks/cohort_scale.py                         # 2,000 labelled + 3,000 unlabelled
    python benchmarks/cohort_scale.py --train 200 --val 20 --infer 300   # a quick look

The exit status is 0 when the workflow finished and segmented every subject.
"""

from __future__ import annotations

import argparse
import csv
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

from cohortseg.core.io import read_tsv, save_nifti
from cohortseg.inputs.demo import demo_phantom

REPO = Path(__file__).resolve().parents[1]
TARGET_WALL_S = 20 * 60

TINY = [
    "training={epochs: 1, steps_per_epoch: 4, batch_size: 2, preset: demo}",
    "patches={per_subject: 2}",
    "plan={max_patch_size: [16, 16, 16]}",
    "model={channels: [4, 8, 16], strides: [2, 2]}",
    "report={qc_sample: 2, qc_worst: 2, qc_unusual: 2}",
]


def print_figure(name: str, value: object, unit: str = "") -> None:
    print(f"{name}: {value} {unit}".rstrip(), flush=True)


def write_cohort(root: Path, n_train: int, n_val: int, n_infer: int, shape, length: int) -> Path:
    """Phantoms and a sample sheet under ``root``; every path about ``length`` characters."""
    folder = root
    while len(str(folder)) < length - 40:
        folder = folder / f"site-{len(str(folder)) % 7}-exported-series-folder"
    folder.mkdir(parents=True)
    splits = ["train"] * n_train + ["val"] * n_val + ["infer"] * n_infer
    rows = ["subject\timage\tlabel\tsplit"]
    for k, split in enumerate(splits):
        image, label, affine = demo_phantom(shape, [4.0, 4.0, 5.0], seed=k)
        ipath = folder / f"patient-{k:06d}_t1.nii.gz"
        save_nifti(ipath, image, affine)
        lpath = ""
        if split != "infer":
            lpath = str(folder / f"patient-{k:06d}_seg.nii.gz")
            save_nifti(lpath, label, affine)
        rows.append(f"PAT{k:06d}\t{ipath}\t{lpath}\t{split}")
    sheet = root / "samples.tsv"
    sheet.write_text("\n".join(rows) + "\n")
    return sheet


def rule_figures(workdir: Path) -> dict[str, dict[str, float]]:
    """Per rule: jobs, their wall seconds (benchmark ``s``) and CPU seconds (``cpu_time``), and
    the wall-clock span from the first job's start to the last job's end (end: its log's mtime;
    start: end - s)."""
    out: dict[str, dict[str, float]] = defaultdict(lambda: {"jobs": 0, "job_s": 0.0, "cpu_s": 0.0})
    spans: dict[str, list[float]] = defaultdict(list)
    bench = workdir / "logs" / "benchmarks"
    for path in bench.rglob("*.tsv"):
        rel = path.relative_to(bench)
        rule = rel.parts[0] if len(rel.parts) > 1 else rel.stem
        with open(path, newline="") as handle:
            record = next(csv.DictReader(handle, delimiter="\t"))
        seconds, cpu = float(record["s"]), float(record.get("cpu_time") or 0.0)
        log = workdir / "logs" / rel.with_suffix(".log")
        end = log.stat().st_mtime if log.exists() else path.stat().st_mtime
        out[rule]["jobs"] += 1
        out[rule]["job_s"] += seconds
        out[rule]["cpu_s"] += cpu
        spans[rule] += [end - seconds, end]
    for rule, times in spans.items():
        out[rule]["span_s"] = max(times) - min(times)
    return dict(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--train", type=int, default=1900, help="labelled train subjects")
    parser.add_argument("--val", type=int, default=100, help="labelled val subjects")
    parser.add_argument("--infer", type=int, default=3000, help="unlabelled subjects")
    parser.add_argument("--shape", type=int, nargs=3, default=[16, 16, 10], help="voxels")
    parser.add_argument("--path-length", type=int, default=160, help="characters per path")
    parser.add_argument("--cores", default="all", help="snakemake --cores")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = parser.parse_args(argv)
    n = args.train + args.val + args.infer
    tmp = Path(tempfile.mkdtemp(prefix="cohortseg-cohort-scale-"))
    try:
        start = time.perf_counter()
        sheet = write_cohort(
            tmp / "data", args.train, args.val, args.infer, args.shape, args.path_length
        )
        print_figure("subjects", n, "subjects")
        print_figure("labelled", args.train + args.val, "subjects")
        print_figure("cohort_setup_wall", f"{time.perf_counter() - start:.1f}", "s")
        work = tmp / "work"
        env = {**os.environ, "COHORTSEG_PSEUDONYM_KEY": "benchmark-key"}
        env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
        cmd = [
            str(Path(sys.executable).parent / "snakemake"),
            *("-s", str(REPO / "Snakefile"), "-d", str(work), "--cores", args.cores, "-q"),
            "--config",
            f"samples={sheet}",
            f"privacy={{pseudonymize: true, mapping_file: {tmp / 'mapping.tsv'}}}",
            *TINY,
        ]
        start = time.perf_counter()
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - start
        print_figure("snakemake_returncode", proc.returncode)
        print_figure("wall", f"{wall:.1f}", "s")
        figures = rule_figures(work)
        for rule, f in sorted(figures.items(), key=lambda kv: -kv[1]["job_s"]):
            print_figure(f"{rule}.jobs", int(f["jobs"]), "jobs")
            print_figure(f"{rule}.job_wall", f"{f['job_s']:.1f}", "s")
            print_figure(f"{rule}.job_cpu", f"{f['cpu_s']:.1f}", "core-s")
            print_figure(f"{rule}.span", f"{f.get('span_s', 0.0):.1f}", "s")
        cores = os.cpu_count() if args.cores == "all" else int(args.cores)
        inside = sum(f["cpu_s"] for f in figures.values())
        print_figure("jobs", int(sum(f["jobs"] for f in figures.values())), "jobs")
        print_figure("job_wall_total", f"{sum(f['job_s'] for f in figures.values()):.1f}", "s")
        print_figure("job_cpu_total", f"{inside:.1f}", "core-s")
        overhead = (wall * cores - inside) / n
        print_figure("orchestration_overhead_per_subject", f"{overhead:.3f}", "core-s")
        print_figure("job_cpu_per_subject", f"{inside / n:.3f}", "core-s")
        metrics = work / "results" / "metrics.tsv"
        segmented = len(read_tsv(metrics)) if metrics.exists() else 0
        print_figure("segmented", segmented, "subjects")
        print_figure("target_wall", TARGET_WALL_S, "s")
        print_figure("within_target", str(wall <= TARGET_WALL_S).lower())
        if proc.returncode != 0:
            print(proc.stdout[-3000:] + proc.stderr[-3000:], file=sys.stderr)
        return 0 if proc.returncode == 0 and segmented == n else 1
    finally:
        if args.keep:
            print(f"kept {tmp}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
