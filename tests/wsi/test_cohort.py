"""The slides' cohort: demo slides, shards per stage, a shard job's slides, pseudonyms."""

from __future__ import annotations

import argparse

from cohortseg.core.io import write_tsv
from cohortseg.core.pseudonyms import pseudonym
from cohortseg.wsi.cohort import demo_slides, job_slides, load_slides, slide_shards
from tests.conftest import default_config


def test_demo_slides_and_shards():
    wsi = default_config()["wsi"]
    demo = {**wsi["demo"], "slides": 3, "val_slides": 1, "test_slides": 2}
    slides = demo_slides(demo)
    assert [s.subject for s in slides] == [f"wsi-00{k}" for k in range(1, 7)]
    assert [s.split for s in slides] == ["train"] * 3 + ["val"] + ["test"] * 2
    assert [s.label.rsplit(".", 1)[1] for s in slides] == ["tif", "geojson"] * 3
    assert slide_shards(slides, 2, "tissue") == {
        "00000": ["wsi-001", "wsi-002"],
        "00001": ["wsi-003", "wsi-004"],
        "00002": ["wsi-005", "wsi-006"],
    }
    # patches: train slides only, and shards without any left out
    assert slide_shards(slides, 2, "patches") == {
        "00000": ["wsi-001", "wsi-002"],
        "00001": ["wsi-003"],
    }
    assert len(slide_shards(slides, "auto", "infer")) == 2  # 4 slides a shard for 6 slides
    assert [s.split for s in demo_slides(wsi["demo"])] == ["train", "train", "val", "test"]


def test_job_slides_leave_out_problems_and_pseudonymise(tmp_path, monkeypatch):
    config = default_config()
    wsi, privacy = config["wsi"], config["privacy"]
    table = tmp_path / "tissue.tsv"
    write_tsv(
        table,
        [{"subject": "wsi-001", "problem": ""}, {"subject": "wsi-002", "problem": "no tissue"}],
        ["subject", "problem"],
    )
    args = argparse.Namespace(wsi=wsi, privacy=privacy, shard_size=2, shard="00000")
    assert [s.subject for s in job_slides(args, "tissue")] == ["wsi-001", "wsi-002"]
    assert [s.subject for s in job_slides(args, "infer", str(table))] == ["wsi-001"]
    monkeypatch.setenv("COHORTSEG_PSEUDONYM_KEY", "k")
    named = load_slides(wsi, {**privacy, "pseudonymize": True})
    assert named[0].subject == pseudonym("wsi-001", b"k")
    assert named[0].image.endswith("wsi-001.tif")  # files keep their names
