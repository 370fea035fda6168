"""`snakemake wsi` on a sheet of small slides, good and bad, pseudonymised: the good ones are
segmented (labels registered, areas, Dice, pyramidal TIFF with the pixel size, report with
overviews), each bad one is one line of the QC table naming the slide and the reason, and no
slide name or input path reaches results/ or logs/."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
import yaml

from cohortseg.core.io import read_tsv
from cohortseg.core.pseudonyms import pseudonym
from cohortseg.wsi.demo import synthetic_slide, write_synthetic_slide
from cohortseg.wsi.pyramid import array_reader, write_pyramid

from .conftest import snakemake

H, W, PX = 768, 1024, 0.5
KEY = "wsi-test-key-not-secret"
NAMES = ["wsi-a", "wsi-b", "wsi-c", "bad-nores", "bad-cut", "bad-misfit", "bad-glass"]


def _sheet(d):
    """Three good slides (mask TIFF and GeoJSON labels) and four bad ones."""
    rows = []
    for k, (name, split, kind) in enumerate(
        [("wsi-a", "train", "mask"), ("wsi-b", "train", "geojson"), ("wsi-c", "test", "geojson")]
    ):
        geometry = synthetic_slide(H, W, seed=10 + k)
        write_synthetic_slide(
            d / f"{name}.tif", geometry, PX, d / f"{name}.mask.tif", d / f"{name}.geojson"
        )
        label = f"{name}.mask.tif" if kind == "mask" else f"{name}.geojson"
        rows.append((name, f"{name}.tif", label, split))
    rgb = synthetic_slide(H, W, seed=20).rgb(0, H, 1)
    tifffile.imwrite(d / "nores.tif", rgb, tile=(256, 256))  # no resolution tags
    rows.append(("bad-nores", "nores.tif", "", "test"))
    data = (d / "wsi-a.tif").read_bytes()
    (d / "cut.tif").write_bytes(data[: len(data) // 3])
    rows.append(("bad-cut", "cut.tif", "", "test"))
    (d / "copy.tif").write_bytes((d / "wsi-c.tif").read_bytes())
    tifffile.imwrite(d / "misfit.tif", np.zeros((100, 400), np.uint8))
    rows.append(("bad-misfit", "copy.tif", "misfit.tif", "test"))
    glass = np.full((512, 512, 3), 236, np.uint8)
    write_pyramid(d / "glass.tif", array_reader(glass), 512, 512, PX, True)
    rows.append(("bad-glass", "glass.tif", "", "infer"))
    lines = ["subject\timage\tlabel\tsplit", *("\t".join(r) for r in rows)]
    (d / "slides.tsv").write_text("\n".join(lines) + "\n")


@pytest.mark.slow
def test_wsi_workflow_good_and_bad_slides(tmp_path, monkeypatch):
    monkeypatch.setenv("COHORTSEG_PSEUDONYM_KEY", KEY)
    alias = {name: pseudonym(name, KEY.encode()) for name in NAMES}
    data = tmp_path / "data"
    data.mkdir()
    _sheet(data)
    config = {
        "shard_size": 8,  # one shard per stage: fewer process starts
        "privacy": {"pseudonymize": True},
        "wsi": {
            "slides": str(data / "slides.tsv"),
            "target_pixel_size_um": 1.0,
            "patch_size": 64,
            "patches_per_slide": 48,
            "tissue_max_side_px": 512,
            "model": {"channels": [8, 16, 32]},
            "training": {"epochs": 3, "steps_per_epoch": 20, "device": "cpu"},
            "inference": {"device": "cpu"},
        },
    }
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(config))
    work = tmp_path / "run"
    snakemake(work, "wsi", "--cores", "2", "--configfile", str(tmp_path / "cfg.yaml"))

    names = {v: k for k, v in alias.items()}
    stats = {names[r["subject"]]: r for r in read_tsv(work / "results/wsi/stats.tsv")}
    assert set(stats) == {"wsi-a", "wsi-b", "wsi-c"}
    assert float(stats["wsi-c"]["tumour_dice"]) > 0.8  # the held-out slide, labelled by GeoJSON
    for row in stats.values():
        assert float(row["pixel_size_um"]) == pytest.approx(1.0)
        assert 0 < float(row["tumour_mm2"]) < float(row["tissue_mm2"]) < H * W * (PX * 1e-3) ** 2

    invalid = read_tsv(work / "results/wsi/qc/invalid_slides.tsv")
    problems = {names[r["subject"]]: r for r in invalid}
    assert set(problems) == {"bad-nores", "bad-cut", "bad-misfit", "bad-glass"}
    assert "wsi.pixel_size_um" in problems["bad-nores"]["problem"]
    assert problems["bad-cut"]["file"] == "<file>"  # input paths are kept out
    assert "does not fit the slide" in problems["bad-misfit"]["problem"]
    assert "no tissue" in problems["bad-glass"]["problem"]
    assert {r["kind"] for r in problems.values()} == {"tissue"}

    c = alias["wsi-c"]
    with tifffile.TiffFile(work / f"results/wsi/segmentations/{c}.tif") as tif:
        levels = tif.series[0].levels
        assert levels[0].shape == (H // 2, W // 2) and len(levels) > 1
        x_res = levels[0].keyframe.tags["XResolution"].value
        assert 1e4 * x_res[1] / x_res[0] == pytest.approx(1.0)
        labels = levels[0].asarray()
    mask0 = tifffile.imread(data / "wsi-c.mask.tif")
    predicted = np.repeat(np.repeat(labels, 2, 0), 2, 1) == 1
    assert (predicted & (mask0 == 1)).sum() / predicted.sum() > 0.8  # on the mask's pixels

    page = (work / "results/wsi/report.html").read_text()
    assert f"overviews/{c}.png" in page and alias["bad-cut"] in page
    assert (work / f"results/wsi/overviews/{c}.png").stat().st_size > 0
    for path in [*(work / "results").rglob("*"), *(work / "logs").rglob("*")]:
        if path.is_file():
            content = path.read_bytes()
            for planted in [*NAMES, str(data)]:
                assert planted.encode() not in content, (planted, path)
