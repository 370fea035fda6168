"""The run at a glance for the report: progress, subjects to review, the model in use (version,
SHA-256), the calibration on the validation split, run time per rule (from the benchmark files),
the preprocessing plan and the configuration."""

import argparse

from cohortseg.core.io import read_json, read_tsv, write_text, write_tsv
from cohortseg.reporting.figures import plot_runtimes, read_benchmarks
from cohortseg.reporting.pages import run_page
from cohortseg.workflow.cli import run
from cohortseg.workflow.registry import model_identity

RUNTIME_COLUMNS = ["rule", "jobs", "total_s", "mean_s", "max_s", "cpu_s", "max_rss_mb"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--config", required=True, help="results/report/config.json: the run's config as shown"
    )
    parser.add_argument("--model", required=True, help="the checkpoint in use (the registry's)")
    parser.add_argument("--plan", required=True, help="results/plan/plan.json")
    parser.add_argument("--stats-summary", required=True, help="results/stats_summary.json")
    parser.add_argument("--calibration", required=True, help="results/calibration.json")
    parser.add_argument("--versions", required=True, help="results/models/versions.tsv")
    parser.add_argument("--benchmarks", required=True, help="folder of benchmark TSVs")
    parser.add_argument("--page", required=True, help="output HTML")
    parser.add_argument("--runtimes", required=True, help="output TSV")
    parser.add_argument("--runtimes-plot", required=True, help="output PNG")
    args = parser.parse_args()
    summary = read_json(args.stats_summary)
    runtimes = read_benchmarks(args.benchmarks)
    write_tsv(args.runtimes, runtimes, RUNTIME_COLUMNS)
    plot_runtimes(runtimes, args.runtimes_plot)
    page = run_page(
        read_json(args.config),
        read_json(args.plan),
        summary["progress"],
        summary["review"],
        runtimes,
        calibration=read_json(args.calibration),
        versions=read_tsv(args.versions),
        model=model_identity(args.model),
    )
    write_text(args.page, page)


if __name__ == "__main__":
    run(main)
