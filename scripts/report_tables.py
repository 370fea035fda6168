"""Pages and figures of the report about the cohort: the metrics and statistics tables as HTML
and the histograms of the class volumes."""

import argparse

from cohortseg.core.io import read_json, read_tsv, write_text
from cohortseg.reporting.figures import plot_volume_histograms
from cohortseg.reporting.pages import metrics_page, stats_page
from cohortseg.workflow.cli import run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--metrics", required=True, help="results/metrics.tsv")
    parser.add_argument("--summary", required=True, help="results/summary.json")
    parser.add_argument("--stats", required=True, help="results/stats.tsv")
    parser.add_argument("--stats-summary", required=True, help="results/stats_summary.json")
    parser.add_argument("--classes", nargs="+", required=True)
    parser.add_argument("--metrics-page", required=True, help="output HTML")
    parser.add_argument("--stats-page", required=True, help="output HTML")
    parser.add_argument("--histograms", required=True, help="output PNG")
    args = parser.parse_args()
    stats, stats_summary = read_tsv(args.stats), read_json(args.stats_summary)
    write_text(
        args.metrics_page,
        metrics_page(read_tsv(args.metrics), read_json(args.summary), args.classes),
    )
    write_text(args.stats_page, stats_page(stats, stats_summary, args.classes))
    plot_volume_histograms(stats, args.classes, stats_summary["outlier_z"], args.histograms)


if __name__ == "__main__":
    run(main)
