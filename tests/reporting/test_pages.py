"""Figures and pages for people: volume histograms, run times from benchmark files, HTML tables
and pages."""

from __future__ import annotations

import math

import pytest

from cohortseg.evaluation.stats import summarise_stats
from cohortseg.reporting.figures import plot_runtimes, plot_volume_histograms, read_benchmarks
from cohortseg.reporting.pages import html_table, metrics_page, run_page, stats_page
from tests.conftest import REPORT_CLASSES, report_cohort

CLASSES = REPORT_CLASSES
PNG = b"\x89PNG"
cohort = report_cohort


def test_volume_histograms_png(tmp_path):
    stats, _ = cohort(unusual={"sub-004": 400.0})
    plot_volume_histograms(stats, CLASSES, 3.5, tmp_path / "h.png")
    assert (tmp_path / "h.png").read_bytes()[:4] == PNG


BENCHMARK_HEADER = (
    "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"
)


def test_run_times_per_rule_from_benchmark_files(tmp_path):
    root = tmp_path / "logs" / "benchmarks"
    (root / "infer").mkdir(parents=True)
    (root / "plan.tsv").write_text(
        BENCHMARK_HEADER + "2.5\t0:00:02\t300.1\t1\t1\t1\t0\t0\t0\t2.0\n"
    )
    for k, s in enumerate([10.0, 30.0]):
        (root / "infer" / f"0000{k}.tsv").write_text(
            BENCHMARK_HEADER + f"{s}\t0:00:10\tNA\tNA\tNA\tNA\tNA\tNA\tNA\t{s / 2}\n"
        )
    runtimes = read_benchmarks(root)
    assert [r["rule"] for r in runtimes] == ["infer", "plan"]
    infer, plan = runtimes
    assert (infer["jobs"], infer["total_s"], infer["mean_s"], infer["max_s"]) == (2, 40, 20, 30)
    assert infer["cpu_s"] == 20 and math.isnan(infer["max_rss_mb"])
    assert plan["max_rss_mb"] == pytest.approx(300.1)
    plot_runtimes(runtimes, tmp_path / "r.png")
    assert (tmp_path / "r.png").read_bytes()[:4] == PNG


def test_html_table_escapes_formats_and_highlights():
    rows = [{"subject": "<b>x</b>", "dice": 0.912345, "n": 3.0, "z": "nan"}, {"subject": "y"}]
    out = html_table(rows, ["subject", "dice", "n", "z"], flagged=lambda r, c: c == "dice")
    assert "&lt;b&gt;x&lt;/b&gt;" in out and "<b>x" not in out
    assert ">0.9123<" in out and ">3<" in out
    assert out.count('flag"') == 2
    assert "1 more rows" in html_table(rows, ["subject"], max_rows=1)


def test_pages_name_what_they_show():
    stats, metrics = cohort(unusual={"sub-004": 400.0})
    summary = summarise_stats(stats, CLASSES, 3.5, cohort_size=22, skipped={"not selected": 2})
    page = stats_page(stats, summary, CLASSES)
    assert "sub-004" in page and "organ volume z=+" in page and "<table>" in page
    metrics_summary = {
        "splits": {"test": {"n_subjects": 20, "dice_organ": {"mean": 0.87, "median": 0.88}}},
        "worst_subjects": [{"subject": "sub-006", "mean_dice": 0.8}],
    }
    page = metrics_page(metrics, metrics_summary, CLASSES)
    assert page.index("sub-006") < page.index("sub-000")  # lowest mean Dice first
    page = run_page(
        {"samples": "demo", "report": {"outlier_z": 3.5}},
        {"target_spacing_mm": [1.0, 1.0, 2.0], "hash": "abc"},
        summary["progress"],
        summary["review"],
        [{"rule": "train", "jobs": 1, "total_s": 60.0}],
        calibration={
            "ece": 0.0123,
            "n_subjects": 2,
            "tta": "mirror",
            "bins": [{"bin": [0.9, 1.0], "voxels": 10, "confidence": 0.95, "accuracy": 0.94}],
        },
        versions=[
            {"version": "v1", "parent": "", "test_dice_organ": "0.911"},
            {"version": "v2", "parent": "v1", "test_dice_organ": "0.934"},
        ],
    )
    for text in (
        "Model versions: Dice per class",
        "0.934",
        "Calibration on the validation split",
        "<b>0.0123</b>",
        "0.9–1.0",
        "outlier_z: 3.5",
        "target_spacing_mm",
        "skipped: not selected",
        "train",
        "sub-004",
    ):
        assert text in page, text


def test_the_run_page_shows_the_network_configured_from_the_plan():
    from cohortseg.networks.topology import auto_network

    network = auto_network([0.8, 0.8, 3.0], [64, 64, 24])
    network.pop("patch_size")

    page = run_page({"samples": "demo"}, {"hash": "abc", "network": network}, {}, [], [])

    assert "Network: DynUNet configured from the plan" in page
    assert ">3×3×1</td>" in page and ">2×2×1</td>" in page  # in-plane first stage
    assert "<td>320</td>" in page and page.count("deep supervision") == 2
