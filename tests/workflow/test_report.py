"""Statistics, QC montages, meshes and the Snakemake report of the demo run, the report opened
in a real (headless) browser."""

from __future__ import annotations

import html.parser
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import yaml

from cohortseg.core.geometry import ras_to_lps, world_bounding_box
from cohortseg.core.io import load_nifti, read_json, read_tsv
from cohortseg.evaluation.meshes import read_mesh
from tests.workflow.conftest import REPO, job_counts, snakemake

CONFIG = yaml.safe_load((REPO / "config.yaml").read_text())
CLASSES = CONFIG["classes"]

pytestmark = pytest.mark.slow


def test_stats_table_has_one_row_per_segmented_subject(demo_run):
    rows = read_tsv(demo_run / "results" / "stats.tsv")
    metrics = {r["subject"]: r for r in read_tsv(demo_run / "results" / "metrics.tsv")}
    assert sorted(r["subject"] for r in rows) == sorted(metrics)
    for r in rows:
        assert r["status"] == "ok", r["subject"]
        for c in CLASSES:
            # the same voxels as the metrics table's volumes
            assert float(r[f"volume_ml_{c}"]) == pytest.approx(
                float(metrics[r["subject"]][f"volume_ml_{c}"]), rel=1e-4
            )
            assert float(r[f"surface_mm2_{c}"]) > 0 and int(r[f"components_{c}"]) >= 1
            for axis in "xyz":
                assert float(r[f"bbox_min_{axis}_mm_{c}"]) < float(r[f"bbox_max_{axis}_mm_{c}"])
    summary = read_json(demo_run / "results" / "stats_summary.json")
    n = len(rows)
    assert summary["progress"]["segmented"] == n and summary["progress"]["failed"] == 0
    assert summary["progress"]["subjects"] == n + summary["progress"]["skipped"]
    assert summary["columns"][f"volume_ml_{CLASSES[0]}"]["n"] == n
    flagged = [r["subject"] for r in rows if r["review"]]
    assert [r["subject"] for r in summary["review"]] == flagged


def test_stats_bounding_box_is_the_segmentations_world_box(demo_run):
    row = read_tsv(demo_run / "results" / "stats.tsv")[0]
    labels, affine = load_nifti(demo_run / row["segmentation"], dtype=np.uint8)
    lo, hi = world_bounding_box(labels == 1, affine)
    got_lo = [float(row[f"bbox_min_{a}_mm_{CLASSES[0]}"]) for a in "xyz"]
    np.testing.assert_allclose(got_lo, lo, atol=1e-3)
    np.testing.assert_allclose(
        [float(row[f"bbox_max_{a}_mm_{CLASSES[0]}"]) for a in "xyz"], hi, atol=1e-3
    )


def test_qc_montages_include_the_worst_dice_subjects(demo_run):
    montages = demo_run / "results" / "qc" / "montages"
    selection = read_json(montages / "selection.json")
    report = CONFIG["report"]
    assert len(selection) >= report["qc_sample"] + max(report["qc_worst"], report["qc_unusual"])
    for subject in selection:
        assert (montages / f"{subject}.png").read_bytes()[:4] == b"\x89PNG"
    assert sorted(p.stem for p in montages.glob("*.png")) == sorted(selection)
    metrics = read_tsv(demo_run / "results" / "metrics.tsv")
    mean_dice = {
        r["subject"]: np.mean([float(r[f"dice_{c}"]) for c in CLASSES])
        for r in metrics
        if r[f"dice_{CLASSES[0]}"]
    }
    worst = sorted(mean_dice, key=mean_dice.get)[: report["qc_worst"]]
    assert set(worst) <= set(selection)


def report_results(report: Path) -> tuple[dict, dict]:
    """The ``results`` and ``categories`` objects embedded in a Snakemake HTML report."""
    text = report.read_text()

    def var(name: str) -> dict:
        match = re.search(rf"var {name} = (\{{.*?\}});\n", text, re.S)
        assert match, f"no {name} in {report}"
        return json.loads(match.group(1))

    return var("results"), var("categories")


@pytest.fixture(scope="module")
def demo_report(demo_run) -> Path:
    """``snakemake --report results/report.html`` on the finished demo run."""
    snakemake(demo_run, "--report", "results/report.html")
    return demo_run / "results" / "report.html"


def test_report_holds_every_figure_and_table(demo_report):
    results, categories = report_results(demo_report)
    assert set(categories) == {
        "Run",
        "Training",
        "Metrics",
        "QC montages",
        "Cohort statistics",
        "Calibration",
        "Robustness",
        "Explanations",
    }
    for path in (
        "results/report/calibration.png",
        "results/report/robustness.png",
        "results/model/learning_curve.png",
        "results/metrics.tsv",
        "results/report/metrics.html",
        "results/report/run.html",
        "results/report/runtimes.png",
        "results/report/stats.html",
        "results/report/volume_histograms.png",
        "results/stats.tsv",
    ):
        assert path in results, path
        assert results[path]["caption"], path
    montages = {p: r for p, r in results.items() if p.startswith("results/qc/montages/")}
    selection = read_json(demo_report.parent / "qc" / "montages" / "selection.json")
    assert {r["labels"]["subject"] for r in montages.values()} == set(selection)
    assert all(r["labels"]["why"] and r["mime_type"] == "image/png" for r in montages.values())
    explanations = {p for p in results if p.startswith("results/qc/explanations/")}
    assert {p.rsplit("/", 1)[1][: -len(".png")] for p in explanations} == set(selection)
    run_page = (demo_report.parent / "report" / "run.html").read_text()
    for text in (
        "segmented",
        "Run time per rule",
        "train",
        "target_spacing_mm",
        "outlier_z",
        "Calibration on the validation split",
    ):
        assert text in run_page, text


class _Checker(html.parser.HTMLParser):
    """Counts tags and records any that are never closed (tables, lists) in our own pages."""

    def __init__(self) -> None:
        super().__init__()
        self.open: list[str] = []
        self.tables = 0

    def handle_starttag(self, tag, attrs):
        if tag in ("table", "tr", "td", "th", "pre", "h1", "h2", "p"):
            self.open.append(tag)
        self.tables += tag == "table"

    def handle_endtag(self, tag):
        if tag in ("table", "tr", "td", "th", "pre", "h1", "h2", "p"):
            assert self.open and self.open.pop() == tag, f"unbalanced </{tag}>"


def test_report_pages_are_well_formed(demo_run):
    for name in ("run.html", "metrics.html", "stats.html"):
        checker = _Checker()
        checker.feed((demo_run / "results" / "report" / name).read_text())
        assert not checker.open and checker.tables >= 2, name


# ------------------------------------------------------------------------------------------
# The report in a real browser

# Injected first in <head>: records page errors (script errors, failed loads of any resource,
# rejected promises, console.error) before the report's own scripts run.
_ERROR_HOOK = """<script>
window.__errors = [];
window.addEventListener("error", function (e) {
  var t = e.target;
  window.__errors.push(t && t !== window ? "failed to load <" + t.tagName + "> "
    + String(t.src || t.href || "").slice(0, 80) : "error: " + e.message);
}, true);
window.addEventListener("unhandledrejection", function (e) {
  window.__errors.push("unhandled rejection: " + e.reason);
});
var __consoleError = console.error;
console.error = function () {
  window.__errors.push("console.error: " + Array.from(arguments).join(" ").slice(0, 300));
  __consoleError.apply(console, arguments);
};
</script>"""

# Injected last in <body>: walks the report like a reader, with the report's own app object:
# every category, then every image and HTML result as the result buttons show it, with its
# caption; after each view every <img> must have decoded and every <iframe> loaded.
_DRIVER = """<script>
window.addEventListener("load", async function () {
  var sleep = function (ms) { return new Promise(function (r) { setTimeout(r, ms); }); };
  var out = {views: []};
  async function settle() {
    await sleep(100);
    for (var img of Array.from(document.images)) {
      if (!img.complete) {
        await new Promise(function (r) {
          img.addEventListener("load", r);
          img.addEventListener("error", r);
        });
      }
    }
    for (var frame of Array.from(document.querySelectorAll("iframe"))) {
      await Promise.race([
        new Promise(function (r) { frame.addEventListener("load", r); }),
        sleep(3000),
      ]);
    }
  }
  function check(name) {
    var bad = Array.from(document.images).filter(function (i) { return !(i.naturalWidth > 0); })
      .map(function (i) { return String(i.src).slice(0, 80); });
    out.views.push({view: name, images: document.images.length, broken: bad,
                    iframes: document.querySelectorAll("iframe").length});
  }
  try {
    await settle();
    if (!document.querySelector("#app").children.length) {
      window.__errors.push("the app did not render");
    }
    check("start");
    for (var cat of Object.keys(categories)) {
      app.showCategory(cat);
      await settle();
      check("category " + cat);
    }
    for (var path of Object.keys(results)) {
      var entry = results[path];
      var kind = entry.mime_type.startsWith("image/") ? "img"
        : entry.mime_type === "text/html" ? "html" : null;
      app.showResultInfo(path);
      if (kind) {
        app.setView({content: kind, contentPath: entry.data_uri, resultPath: path});
      }
      await settle();
      check(path);
    }
  } catch (e) {
    window.__errors.push("driver: " + e);
  }
  out.errors = window.__errors;
  var pre = document.createElement("pre");
  pre.id = "cohortseg-check";
  pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
});
</script>"""


def find_chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        path = shutil.which(name)
        if path:
            return path
    return None


def open_in_browser(report: Path, tmp_path: Path, chromium: str) -> dict:
    """Open a copy of ``report`` with the hooks above in headless Chromium; the driver's record
    of the views, the images and the page errors."""
    page = report.read_text()
    head, body_end = page.index("<head>") + len("<head>"), page.rindex("</body>")
    checked = tmp_path / "report_checked.html"
    checked.write_text(page[:head] + _ERROR_HOOK + page[head:body_end] + _DRIVER + page[body_end:])
    cmd = [
        chromium,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
        "--virtual-time-budget=60000",
        "--dump-dom",
        checked.as_uri(),
    ]
    # a net for a hang (the page's own timers run on virtual time, 60 s at most)
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    match = re.search(r'<pre id="cohortseg-check">(.*?)</pre>', proc.stdout, re.S)
    assert match, f"the check did not finish in the browser:\n{proc.stderr[-3000:]}"
    return json.loads(html.unescape(match.group(1)))


@pytest.fixture(scope="module")
def chromium() -> str:
    """Path of a Chromium binary; skips without one unless COHORTSEG_REQUIRE_BROWSER=1."""
    path = find_chromium()
    if path is None:
        if os.environ.get("COHORTSEG_REQUIRE_BROWSER") == "1":
            pytest.fail("no chromium on PATH and COHORTSEG_REQUIRE_BROWSER=1")
        pytest.skip("no chromium on PATH (apt-get install chromium)")
    return path


def test_the_browser_check_catches_script_errors_and_broken_images(tmp_path, chromium):
    # A stand-in for a Snakemake report: its globals, one broken image result, one script error.
    fake = tmp_path / "fake.html"
    fake.write_text(
        '<html><head></head><body><div id="app"><p>app</p></div><script>'
        "var categories = {};"
        'var results = {"x.png": {mime_type: "image/png", data_uri: "data:image/png;base64,AAAA"}};'
        "var app = {showCategory: function () {}, showResultInfo: function () {},"
        " setView: function (v) { var i = document.createElement('img'); i.src = v.contentPath;"
        " document.body.appendChild(i); }};"
        "</script><script>undefinedFunction();</script></body></html>"
    )
    record = open_in_browser(fake, tmp_path, chromium)
    assert any("undefinedFunction" in e for e in record["errors"]), record
    assert any("failed to load <IMG>" in e for e in record["errors"]), record
    assert [v["broken"] for v in record["views"] if v["view"] == "x.png"] != [[]]


def test_report_opens_in_a_browser_without_errors_or_missing_images(
    demo_report, tmp_path, chromium
):
    record = open_in_browser(demo_report, tmp_path, chromium)
    assert record["errors"] == []
    results, categories = report_results(demo_report)
    views = {v["view"]: v for v in record["views"]}
    assert set(views) == {"start", *(f"category {c}" for c in categories), *results}
    assert all(not v["broken"] for v in views.values()), [v for v in views.values() if v["broken"]]
    for path, entry in results.items():
        if entry["mime_type"] == "image/png":
            assert views[path]["images"] >= 2, path  # the logo and the result
        if entry["mime_type"] == "text/html":
            assert views[path]["iframes"] == 1, path


# ------------------------------------------------------------------------------------------
# Meshes


def test_meshes_lie_on_the_segmentation_in_lps(demo_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(demo_run, run, symlinks=True)  # the session's demo run stays as it is
    stats = {r["subject"]: r for r in read_tsv(run / "results" / "stats.tsv")}
    n_shards = len(list((run / "results" / "stats").glob("*.tsv")))
    manifests = [f"results/meshes/{k:05d}.tsv" for k in range(n_shards)]
    config = ("--config", "meshes={enabled: true, format: stl}")
    planned = job_counts(snakemake(run, "-n", *manifests, *config).stdout)
    assert planned == {"meshes": n_shards}  # one job per shard, nothing else
    snakemake(run, "--cores", "2", *manifests, *config)
    listed = [row for m in manifests for row in read_tsv(run / m)]
    assert {(r["subject"], r["class"]) for r in listed} == {(s, c) for s in stats for c in CLASSES}
    assert all(r["mesh"] == f"results/meshes/{r['subject']}/{r['class']}.stl" for r in listed)
    for subject, row in stats.items():
        labels, affine = load_nifti(run / row["segmentation"], dtype=np.uint8)
        voxel = float(np.sqrt((affine[:3, :3] ** 2).sum(axis=0)).max())
        for value, c in enumerate(CLASSES, start=1):
            vertices, _, header = read_mesh(run / "results" / "meshes" / subject / f"{c}.stl")
            assert "SPACE=LPS" in header
            lo, hi = world_bounding_box(labels == value, affine)
            ras = ras_to_lps(vertices)
            assert np.all(np.abs(ras.min(axis=0) - lo) < voxel), (subject, c)
            assert np.all(np.abs(ras.max(axis=0) - hi) < voxel), (subject, c)
    os.remove(run / listed[0]["mesh"])  # a deleted mesh: only its shard runs again
    again = snakemake(run, "-n", *manifests, *config).stdout
    # the marker job that makes the finished shard run again (reruns.smk), and that shard
    assert job_counts(again) == {"rerun_marker": 1, "meshes": 1}
