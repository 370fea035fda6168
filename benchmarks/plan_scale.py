"""How long ``snakemake -n`` takes, and how much memory it needs, to plan a large cohort.

Writes a sample sheet of ``--subjects`` subjects (a few hundred ``train``/``val`` with labels,
the rest ``infer``; the image and label files are empty placeholders, which a dry run never
opens) in a temporary directory, then times

    snakemake -s REPO/Snakefile -d TMPDIR -n --config samples=SHEET shard_size=K

with this interpreter's Snakemake. It prints one ``name: value unit`` line per figure: wall
time, CPU time and peak RSS of the Snakemake process tree, the jobs per rule from Snakemake's
"Job stats" table, and whether the number of ``infer`` jobs equals ceil(N / shard_size) (every
split is segmented by default; ``shard_size`` is ``auto`` by default, as in config.yaml).
Unless ``--no-baseline`` is given, the same command is first
timed on the labelled subjects plus one shard, so the fixed start-up cost (imports, executor
plugins) can be told apart from the cost of planning N subjects. ``slurm_probe_wall`` is how long
``scontrol show config`` takes here: the slurm executor plugin runs it at every start and, with
SLURM tools installed but no slurmctld reachable, waits out its 10 s time-out.

    python benchmarks/plan_scale.py                      # 50,000 subjects, shard_size auto
    python benchmarks/plan_scale.py --subjects 10000 --shard-size 50
    python benchmarks/plan_scale.py --profile plan.prof  # cProfile of Snakemake's main
    python benchmarks/plan_scale.py --snakemake-args "-q rules"  # without the per-job listing

The exit status is 0 when Snakemake succeeded and the infer job count is right, 1 otherwise;
the wall-time and memory targets are reported, not enforced.
"""

from __future__ import annotations

import argparse
import math
import os
import pstats
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cohortseg.core.cohort import resolve_shard_size

REPO = Path(__file__).resolve().parents[1]
TARGET_WALL_S = 30
TARGET_RSS_MIB = 1536


@dataclass
class Run:
    """One ``snakemake -n`` run: exit status, wall and CPU time (s), peak RSS (KiB), output."""

    returncode: int
    wall_s: float
    cpu_s: float
    peak_rss_kib: int
    output: str


def write_cohort(root: Path, n_subjects: int, n_train: int, n_val: int) -> Path:
    """Write ``root/samples.tsv`` and empty placeholder images (and labels for train/val).

    Returns the sheet's path. Subjects are ``sub-000001``… in sheet order: ``n_train`` train,
    ``n_val`` val, the rest ``infer``.
    """
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    width = max(6, len(str(n_subjects)))
    lines = ["subject\timage\tlabel\tsplit"]
    for i in range(1, n_subjects + 1):
        sid = f"sub-{i:0{width}d}"
        image = f"images/{sid}.nii.gz"
        (root / image).touch()
        if i <= n_train + n_val:
            label = f"labels/{sid}.nii.gz"
            (root / label).touch()
            split = "train" if i <= n_train else "val"
        else:
            label, split = "", "infer"
        lines.append(f"{sid}\t{image}\t{label}\t{split}")
    sheet = root / "samples.tsv"
    sheet.write_text("\n".join(lines) + "\n")
    return sheet


def run_dry(
    workdir: Path,
    sheet: Path,
    shard_size: int | str,
    timeout_s: float,
    profile: Path | None = None,
    extra: Sequence[str] = (),
) -> Run:
    """Run ``snakemake -n`` on ``sheet`` in ``workdir``; output goes to a file, not a pipe."""
    prefix = [sys.executable]
    if profile is not None:
        prefix += ["-m", "cProfile", "-o", str(profile)]
    cmd = [
        *prefix,
        "-m",
        "snakemake",
        "-s",
        str(REPO / "Snakefile"),
        "-d",
        str(workdir),
        "-n",
        "--config",
        f"samples={sheet}",
        f"shard_size={shard_size}",
        *extra,
    ]
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    log = workdir / "snakemake-dry-run.log"
    with open(log, "wb") as out:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
        timer = threading.Timer(timeout_s, proc.kill)
        timer.start()
        # wait4 (not Popen.wait) to get this child's own rusage: ru_maxrss is the peak RSS of
        # the process or of its largest waited-for descendant, in KiB on Linux.
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        timer.cancel()
    proc.returncode = os.waitstatus_to_exitcode(status)
    cpu = usage.ru_utime + usage.ru_stime
    return Run(proc.returncode, wall, cpu, usage.ru_maxrss, log.read_text(errors="replace"))


def job_stats(output: str) -> dict[str, int]:
    """Jobs per rule from Snakemake's "Job stats" table (the first one), ``total`` included."""
    counts: dict[str, int] = {}
    lines = output.splitlines()
    try:
        start = next(i for i, line in enumerate(lines) if line.strip() == "Job stats:")
    except StopIteration:
        return counts
    for line in lines[start + 1 :]:
        fields = line.split()
        if not fields:
            if counts:
                break
            continue
        if len(fields) == 2 and fields[1].isdigit():
            counts[fields[0]] = int(fields[1])
        elif counts:
            break
    return counts


def print_figure(name: str, value: object, unit: str = "") -> None:
    print(f"{name}: {value} {unit}".rstrip(), flush=True)


def slurm_probe_s() -> float | None:
    """Seconds ``scontrol show config`` takes here, as the slurm executor plugin runs it when
    Snakemake starts (10 s time-out); ``None`` without scontrol. Without a reachable slurmctld
    it waits the whole time-out: a machine artefact inside every wall time below."""
    if shutil.which("scontrol") is None:
        return None
    start = time.perf_counter()
    try:
        subprocess.run(["scontrol", "show", "config"], capture_output=True, timeout=10)
    except subprocess.TimeoutExpired:
        pass
    return time.perf_counter() - start


def report_run(prefix: str, run: Run) -> None:
    print_figure(f"{prefix}wall", f"{run.wall_s:.2f}", "s")
    print_figure(f"{prefix}cpu_time", f"{run.cpu_s:.2f}", "s")
    print_figure(f"{prefix}peak_rss", f"{run.peak_rss_kib / 1024:.0f}", "MiB")


def report_jobs(counts: dict[str, int], expected_infer: int) -> bool:
    """Print jobs per rule; True if the rule ``infer`` has ``expected_infer`` jobs."""
    for rule, n in counts.items():
        if rule != "total":
            print_figure(f"jobs.{rule}", n, "jobs")
    print_figure("jobs.total", counts.get("total", 0), "jobs")
    print_figure("infer_jobs", counts.get("infer", 0), "jobs")
    print_figure("infer_jobs_expected", expected_infer, "jobs")
    match = counts.get("infer", 0) == expected_infer
    print_figure("infer_jobs_match", str(match).lower())
    return match


def print_profile(path: Path, top: int) -> None:
    """The ``top`` functions by cumulative and by own time, to stderr (stdout stays parseable)."""
    stats = pstats.Stats(str(path), stream=sys.stderr)
    stats.strip_dirs()
    for key in ("cumulative", "tottime"):
        print(f"\n--- cProfile of snakemake's main, top {top} by {key} ---", file=sys.stderr)
        stats.sort_stats(key).print_stats(top)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--subjects", type=int, default=50_000, help="cohort size N")
    parser.add_argument(
        "--shard-size", default="auto", help="shard_size: a number or auto (the default)"
    )
    parser.add_argument("--train", type=int, default=240, help="labelled train subjects")
    parser.add_argument("--val", type=int, default=60, help="labelled val subjects")
    parser.add_argument("--no-baseline", action="store_true", help="skip the start-up run")
    parser.add_argument("--profile", type=Path, help="also write a cProfile of snakemake here")
    parser.add_argument("--profile-top", type=int, default=30, help="profile lines to show")
    parser.add_argument("--timeout", type=float, default=900, help="per run, seconds")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    parser.add_argument(
        "--snakemake-args",
        default="",
        help="more snakemake arguments, e.g. '-q rules' (no per-job listing)",
    )
    args = parser.parse_args(argv)
    args.snakemake_args = shlex.split(args.snakemake_args)
    if args.shard_size != "auto":
        args.shard_size = int(args.shard_size)
    if args.subjects <= args.train + args.val or (
        args.shard_size != "auto" and args.shard_size < 1
    ):
        parser.error("need --subjects > --train + --val and --shard-size >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    labelled = args.train + args.val
    tmp = Path(tempfile.mkdtemp(prefix="cohortseg-plan-scale-"))
    try:
        print_figure("subjects", args.subjects, "subjects")
        print_figure("labelled", labelled, "subjects")
        print_figure("shard_size", args.shard_size, "subjects")
        print_figure("cpus", os.cpu_count(), "cores")
        probe = slurm_probe_s()
        if probe is not None:
            print_figure("slurm_probe_wall", f"{probe:.2f}", "s")

        if not args.no_baseline:
            n_small = labelled + resolve_shard_size(args.shard_size, args.subjects)
            (tmp / "baseline").mkdir()
            sheet = write_cohort(tmp / "baseline", n_small, args.train, args.val)
            base = run_dry(
                tmp / "baseline", sheet, args.shard_size, args.timeout, None, args.snakemake_args
            )
            print_figure("baseline_subjects", n_small, "subjects")
            report_run("baseline_", base)

        (tmp / "cohort").mkdir()
        start = time.perf_counter()
        sheet = write_cohort(tmp / "cohort", args.subjects, args.train, args.val)
        print_figure("cohort_setup_wall", f"{time.perf_counter() - start:.2f}", "s")
        run = run_dry(
            tmp / "cohort", sheet, args.shard_size, args.timeout, None, args.snakemake_args
        )
        print_figure("snakemake_returncode", run.returncode)
        report_run("", run)
        if not args.no_baseline:
            print_figure("wall_minus_baseline", f"{run.wall_s - base.wall_s:.2f}", "s")
        print_figure("output_lines", len(run.output.splitlines()), "lines")
        # Every split is segmented by default (inference.splits), so all N subjects are sharded.
        expected = math.ceil(args.subjects / resolve_shard_size(args.shard_size, args.subjects))
        match = report_jobs(job_stats(run.output), expected)
        within = run.wall_s <= TARGET_WALL_S and run.peak_rss_kib <= TARGET_RSS_MIB * 1024
        print_figure("target_wall", TARGET_WALL_S, "s")
        print_figure("target_peak_rss", TARGET_RSS_MIB, "MiB")
        print_figure("within_targets", str(within).lower())
        if run.returncode != 0:
            print(run.output[-4000:], file=sys.stderr)

        if args.profile is not None:
            (tmp / "profiled").mkdir()
            sheet = write_cohort(tmp / "profiled", args.subjects, args.train, args.val)
            profiled = run_dry(
                tmp / "profiled",
                sheet,
                args.shard_size,
                args.timeout,
                args.profile,
                args.snakemake_args,
            )
            print_figure("profiled_wall", f"{profiled.wall_s:.2f}", "s")
            if args.profile.exists():
                print_profile(args.profile, args.profile_top)
        return 0 if run.returncode == 0 and match else 1
    finally:
        if args.keep:
            print(f"kept {tmp}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
