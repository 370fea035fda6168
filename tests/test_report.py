"""Figures and pages for people: QC selection and montage orientation, histograms, run times
from benchmark files, HTML tables."""

from __future__ import annotations

import math

import nibabel.orientations as nio
import numpy as np
import pytest

from cohortseg.errors import CohortsegError
from cohortseg.io import save_nifti
from cohortseg.report import (
    cohort_images,
    html_table,
    metrics_page,
    montage_slices,
    plot_runtimes,
    plot_volume_histograms,
    qc_montage,
    read_benchmarks,
    run_page,
    select_qc_subjects,
    stats_page,
    write_qc_montages,
)
from cohortseg.stats import flag_outliers, summarise_stats

CLASSES = ["organ", "shell"]
PNG = b"\x89PNG"


def cohort(n: int = 20, unusual: dict[str, float] | None = None) -> tuple[list, list]:
    """Statistics and metrics rows of a synthetic cohort (volumes flagged like the workflow)."""
    rng = np.random.default_rng(1)
    stats, metrics = [], []
    for k in range(n):
        s = f"sub-{k:03d}"
        vol = (unusual or {}).get(s, 100 + rng.normal(0, 5))
        stats.append(
            {
                "subject": s,
                "split": "test",
                "status": "ok",
                "volume_ml_organ": vol,
                "volume_ml_shell": 20 + rng.normal(0, 1),
            }
        )
        metrics.append(
            {"subject": s, "split": "test", "dice_organ": 0.9 - 0.01 * (k % 7), "dice_shell": 0.85}
        )
    return flag_outliers(stats, CLASSES, 3.5), metrics


def test_qc_selection_has_the_worst_dice_the_unusual_volumes_and_a_stable_sample():
    stats, metrics = cohort(unusual={"sub-004": 400.0})
    metrics[10]["dice_organ"] = 0.1
    stats[12]["status"] = "failed"
    metrics[12]["dice_organ"] = 0.0  # failed segmentations cannot be shown
    picked = select_qc_subjects(stats, metrics, CLASSES, qc_sample=3, qc_worst=2, qc_unusual=1)
    subjects = [p["subject"] for p in picked]
    assert subjects[0] == "sub-010" and "low Dice" in picked[0]["why"]
    assert subjects[2] == "sub-004" and picked[2]["why"].startswith("unusual organ volume (z=+")
    assert len(subjects) == 6 == len(set(subjects)) and "sub-012" not in subjects
    assert [p["why"] for p in picked[3:]] == ["random sample"] * 3
    again = select_qc_subjects(stats, metrics, CLASSES, qc_sample=3, qc_worst=2, qc_unusual=1)
    assert again == picked
    # more subjects: the earlier sample stays unless a new subject ranks before it
    bigger_stats, bigger_metrics = cohort(n=21, unusual={"sub-004": 400.0})
    bigger_metrics[10]["dice_organ"] = 0.1
    bigger = select_qc_subjects(bigger_stats, bigger_metrics, CLASSES, 3, 2, 1)
    sample = {p["subject"] for p in picked[3:]}
    assert len(sample & {p["subject"] for p in bigger[3:]}) >= 2


def test_qc_selection_with_a_seed_draws_another_sample():
    stats, metrics = cohort(n=40)
    a = select_qc_subjects(stats, metrics, CLASSES, 5, 0, 0, seed=0)
    b = select_qc_subjects(stats, metrics, CLASSES, 5, 0, 0, seed=1)
    assert a != b and len(a) == len(b) == 5


def marked_volume():
    """A RAS volume (1 mm) with the label in the patient's right-anterior-superior octant."""
    image = np.zeros((20, 24, 16), np.float32)
    labels = np.zeros(image.shape, np.uint8)
    labels[12:18, 14:22, 9:14] = 1  # x > centre: Right, y: Anterior, z: Superior
    image[labels > 0] = 100
    return image, labels, np.eye(4)


def test_montage_shows_right_on_the_left_and_anterior_superior_up():
    image, labels, affine = marked_volume()
    axial, coronal, sagittal = montage_slices(image, labels, affine)
    rows, cols = np.nonzero(axial["labels"])  # row 0 at the bottom
    assert cols.max() < axial["labels"].shape[1] / 2  # patient's right on the viewer's left
    assert rows.min() > axial["labels"].shape[0] / 2  # anterior up
    rows, cols = np.nonzero(coronal["labels"])
    assert (
        cols.max() < coronal["labels"].shape[1] / 2 and rows.min() > coronal["labels"].shape[0] / 2
    )
    rows, cols = np.nonzero(sagittal["labels"])
    assert cols.max() < sagittal["labels"].shape[1] / 2  # anterior on the left
    assert rows.min() > sagittal["labels"].shape[0] / 2  # superior up
    assert axial["extent_mm"] == (20.0, 24.0) and sagittal["sides"] == ("A", "P", "I", "S")


@pytest.mark.parametrize("axcodes", [("L", "P", "S"), ("S", "R", "P"), ("A", "I", "L")])
def test_montage_is_the_same_whatever_the_voxel_order_on_disk(axcodes):
    image, labels, affine = marked_volume()
    ornt = nio.ornt_transform(nio.axcodes2ornt(("R", "A", "S")), nio.axcodes2ornt(axcodes))
    stored_image = nio.apply_orientation(image, ornt)
    stored_labels = nio.apply_orientation(labels, ornt)
    stored_affine = affine @ nio.inv_ornt_aff(ornt, image.shape)
    assert nio.aff2axcodes(stored_affine) == axcodes
    for want, got in zip(
        montage_slices(image, labels, affine),
        montage_slices(stored_image, stored_labels, stored_affine),
        strict=True,
    ):
        np.testing.assert_array_equal(got["labels"], want["labels"])
        np.testing.assert_array_equal(got["image"], want["image"])


def test_qc_montage_png(tmp_path):
    image, labels, affine = marked_volume()
    qc_montage(image, labels, affine, CLASSES, "sub-001 (test): random sample", tmp_path / "m.png")
    assert (tmp_path / "m.png").read_bytes()[:4] == PNG


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
    )
    for text in (
        "outlier_z: 3.5",
        "target_spacing_mm",
        "skipped: not selected",
        "train",
        "sub-004",
    ):
        assert text in page, text


def test_cohort_images_use_the_runs_subject_ids(monkeypatch):
    from cohortseg.privacy import pseudonym

    config = {
        "samples": "demo",
        "demo": {"subjects_per_split": {"train": 1, "val": 1}},
        "privacy": {"pseudonymize": False, "key_env": "TEST_COHORTSEG_KEY", "key_file": None},
    }
    assert cohort_images(config) == {
        "demo-001": "resources/demo/images/demo-001.nii.gz",
        "demo-002": "resources/demo/images/demo-002.nii.gz",
    }
    monkeypatch.setenv("TEST_COHORTSEG_KEY", "secret")
    config["privacy"]["pseudonymize"] = True
    images = cohort_images(config)
    assert images[pseudonym("demo-002", b"secret")] == "resources/demo/images/demo-002.nii.gz"


def test_write_qc_montages_reads_images_from_the_cohort(tmp_path):
    image, labels, affine = marked_volume()
    save_nifti(tmp_path / "img.nii.gz", image, affine)
    save_nifti(tmp_path / "seg.nii.gz", labels, affine)
    stats = [{"subject": "s1", "image": "<image>", "segmentation": str(tmp_path / "seg.nii.gz")}]
    selection = [{"subject": "s1", "split": "test", "why": "random sample"}]
    images = {"s1": str(tmp_path / "img.nii.gz")}
    written = write_qc_montages(selection, stats, images, CLASSES, tmp_path / "qc")
    assert written == [tmp_path / "qc" / "s1.png"] and written[0].read_bytes()[:4] == PNG
    save_nifti(tmp_path / "seg.nii.gz", labels, affine @ np.diag([2.0, 1.0, 1.0, 1.0]))
    with pytest.raises(CohortsegError, match="not on the grid"):
        write_qc_montages(selection, stats, images, CLASSES, tmp_path / "qc")
