"""The cohort of slides: a sample sheet (the volume sheet's columns, one slide per row) or the
synthetic demo slides, their shards, and where each stage writes (pure functions of the
``wsi`` config, so that the workflow's wiring is unit-tested)."""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping

from cohortseg.core.cohort import Subject, read_sample_sheet, resolve_shard_size, shard_table
from cohortseg.core.pseudonyms import load_key, pseudonymize

WSI_DIR = "results/wsi"


DEMO_DIR = "resources/wsi_demo"


#: Splits each stage works on: patches and training from ``train`` slides, the rest from all.
STAGE_SPLITS = {"tissue": None, "patches": ("train",), "infer": None}


#: The slide model in use: the trainer's ``best.pt`` (its ``last.pt``, training log and
#: learning curve beside it).
MODEL = f"{WSI_DIR}/model/best.pt"


#: Where the slide trainer keeps ``last.pt`` while training: a directory Snakemake leaves
#: alone when it reruns ``wsi_train``, so that a killed job resumes.
TRAIN_CHECKPOINT_DIR = f"{WSI_DIR}/.train_checkpoint"


STATS = f"{WSI_DIR}/stats.tsv"


INVALID_TABLE = f"{WSI_DIR}/qc/invalid_slides.tsv"


REPORT = f"{WSI_DIR}/report.html"


def demo_slides(demo: Mapping) -> list[Subject]:
    """The demo slides ``wsi-001``…: ``demo.slides`` train slides, ``demo.val_slides``
    validation slides (of the training) and ``demo.test_slides`` test slides, in this order;
    odd-numbered slides are labelled by a level-0 mask TIFF, even ones by QuPath GeoJSON
    annotations, so both label kinds run."""
    splits = ["train"] * int(demo["slides"]) + ["val"] * int(demo["val_slides"])
    splits += ["test"] * int(demo["test_slides"])
    subjects = []
    for k, split in enumerate(splits, start=1):
        sid = f"wsi-{k:03d}"
        label = f"{DEMO_DIR}/{sid}.mask.tif" if k % 2 else f"{DEMO_DIR}/{sid}.geojson"
        subjects.append(Subject(sid, demo_image(sid), label, split))
    return subjects


def demo_image(slide: str) -> str:
    """The demo slide's pyramidal TIFF."""
    return f"{DEMO_DIR}/{slide}.tif"


def load_slides(wsi: Mapping, privacy: Mapping) -> list[Subject]:
    """The slides named by ``wsi.slides``: ``demo`` or a sample sheet (columns subject,
    image, label: a mask image or GeoJSON, split), named by pseudonyms where
    ``privacy.pseudonymize`` says so (as volumes are)."""
    if wsi["slides"] == "demo":
        slides = demo_slides(wsi["demo"])
    else:
        slides = read_sample_sheet(wsi["slides"])
    return pseudonymize(slides, load_key(privacy)) if privacy["pseudonymize"] else slides


def slide_shards(slides: list[Subject], shard_size: int | str, stage: str) -> dict[str, list[str]]:
    """Shard id → the slides of ``stage``'s splits (sheet order, ``shard_size`` per shard as
    for volumes; shards without any left out)."""
    size = resolve_shard_size(shard_size, len(slides))
    splits = STAGE_SPLITS[stage]
    leave_out = {s.subject for s in slides if splits is not None and s.split not in splits}
    return shard_table([s.subject for s in slides], size, leave_out)


def tissue_manifest_path(shard: str) -> str:
    """The tissue stage's shard table: one row per slide, ``problem`` empty when usable."""
    return f"{WSI_DIR}/tissue/{shard}.tsv"


def patch_manifest_path(shard: str) -> str:
    """The patch stage's shard manifest (slide, store, SHA-256)."""
    return f"{WSI_DIR}/patches/{shard}.tsv"


def inference_manifest_path(shard: str) -> str:
    """The inference stage's shard table: each slide's outputs, statistics and problem."""
    return f"{WSI_DIR}/inference/{shard}.tsv"


def slide_paths(slide: str) -> dict[str, str]:
    """Where a slide's files go."""
    return {
        "tissue": f"{WSI_DIR}/tissue/{slide}.png",
        "plan": f"{WSI_DIR}/tissue/{slide}.json",
        "store": f"{WSI_DIR}/patches/{slide}.h5",
        "segmentation": f"{WSI_DIR}/segmentations/{slide}.tif",
        "overview": f"{WSI_DIR}/overviews/{slide}.png",
    }


def add_slide_shard_arguments(parser: argparse.ArgumentParser) -> None:
    """The arguments every slide shard job takes: ``--wsi`` and ``--privacy`` (config
    sections as JSON), ``--shard-size``, ``--shard`` and ``--table`` (its output)."""
    parser.add_argument("--wsi", type=json.loads, required=True, help="the wsi config (JSON)")
    parser.add_argument("--privacy", type=json.loads, required=True, help="privacy config, JSON")
    parser.add_argument("--shard-size", required=True, help="shard_size (a number or auto)")
    parser.add_argument("--shard", required=True, help="shard id, e.g. 00003")
    parser.add_argument("--table", required=True, help="the shard's table (TSV) to write")


def job_slides(args: argparse.Namespace, stage: str, table: str | None = None) -> list[Subject]:
    """The slides of ``args.shard`` that ``stage`` works on, in sheet order, less those an
    earlier stage's shard ``table`` lists with a problem."""
    from cohortseg.core.io import read_tsv

    slides = load_slides(args.wsi, args.privacy)
    members = set(slide_shards(slides, args.shard_size, stage)[args.shard])
    ok = None if table is None else {r["subject"] for r in read_tsv(table) if not r["problem"]}
    return [s for s in slides if s.subject in members and (ok is None or s.subject in ok)]
