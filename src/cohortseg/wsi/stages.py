"""What each slide stage does to one slide (tissue and plan, patches, segmentation and
statistics), and a shard's loop that records a bad slide as one QC line and goes on."""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import h5py
import numpy as np

from cohortseg.core.cohort import Subject
from cohortseg.core.errors import InvalidInputError
from cohortseg.core.io import atomic_write, read_json, write_json
from cohortseg.wsi.cohort import slide_paths
from cohortseg.wsi.inference import (
    Predictor,
    class_areas_mm2,
    overview,
    scratch_path,
    segment_slide,
    write_label_pyramid,
)
from cohortseg.wsi.labels import LabelSource, open_labels
from cohortseg.wsi.patches import sample_slide_origins, write_slide_store
from cohortseg.wsi.slides import Slide, open_slide, slide_plan
from cohortseg.wsi.tissue import detect_tissue, tissue_area_mm2

log = logging.getLogger(__name__)


#: Columns of a slide problem (the volume pipeline's invalid-subject table's).
PROBLEM_COLUMNS = ("subject", "kind", "file", "problem")


def plan_hash(classes: Sequence[str], target_pixel_size_um: float, patch_size: int) -> str:
    """12 hex digits naming what patches and the model depend on."""
    text = json.dumps([list(classes), float(target_pixel_size_um), int(patch_size)])
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def try_each(
    slides: Sequence[Subject], work: Callable[[Subject], dict], stage: str
) -> tuple[list[dict], list[dict]]:
    """``work(slide)`` for each slide; a bad slide (``InvalidInputError``) becomes one problem
    row (:data:`PROBLEM_COLUMNS`) and the others go on. Returns (rows, problems)."""
    rows, problems = [], []
    for k, s in enumerate(slides, start=1):
        start = time.perf_counter()
        try:
            rows.append(work(s))
        except InvalidInputError as exc:
            log.error("%s", exc)
            problems.append(
                {"subject": s.subject, "kind": stage, "file": exc.path, "problem": exc.problem}
            )
            continue
        log.info("%s: done (%d/%d, %.1f s)", s.subject, k, len(slides), time.perf_counter() - start)
    return rows, problems


def _write_mask_png(path: str, mask: np.ndarray) -> None:
    """A bool mask as an 8-bit PNG (0/255), atomically."""
    from PIL import Image

    with atomic_write(path) as tmp:
        Image.fromarray(mask.astype(np.uint8) * 255).save(tmp, format="PNG")


def read_mask_png(path: str) -> np.ndarray:
    """A mask written by the tissue stage, as bool."""
    from PIL import Image

    with Image.open(path) as image:
        return np.asarray(image) > 0


def prepare_slide(
    s: Subject,
    classes: Sequence[str],
    pixel_size_um: float | None,
    target_pixel_size_um: float,
    patch_size: int,
    tissue_max_side_px: int,
) -> dict:
    """Open a slide, choose its level, detect its tissue and check its labels; writes the
    tissue mask (PNG) and the slide's plan (JSON, with tissue area in mm²). Raises
    ``InvalidInputError`` for a bad slide or labels."""
    paths = slide_paths(s.subject)
    slide = open_slide(s.subject, s.image, pixel_size_um)
    try:
        plan = slide_plan(slide, target_pixel_size_um, patch_size)
        tissue, tissue_level = detect_tissue(slide, tissue_max_side_px)
        labels = open_labels(slide, s.label, classes)
        if labels is not None:  # reads every label once: bad values and misfits show here
            labels.region(slide.downsamples[tissue_level], 0, 0, *tissue.shape)
        plan.update(
            subject=s.subject,
            split=s.split,
            tissue_level=tissue_level,
            tissue_downsample=slide.downsamples[tissue_level],
            tissue_area_mm2=tissue_area_mm2(tissue, slide.level_pixel_size_um(tissue_level)),
            hash=plan_hash(classes, target_pixel_size_um, patch_size),
        )
    finally:
        slide.close()
    _write_mask_png(paths["tissue"], tissue)
    write_json(paths["plan"], plan)
    return {"subject": s.subject, "split": s.split, "plan": paths["plan"]}


def _reopen(s: Subject, pixel_size_um: float | None) -> tuple[Slide, dict, np.ndarray]:
    """The slide, its plan and tissue mask from the tissue stage."""
    paths = slide_paths(s.subject)
    return (
        open_slide(s.subject, s.image, pixel_size_um),
        read_json(paths["plan"]),
        read_mask_png(paths["tissue"]),
    )


def slide_patches(
    s: Subject,
    classes: Sequence[str],
    pixel_size_um: float | None,
    n_patches: int,
    foreground_fraction: float,
    compression: str | None,
    compression_level: int,
    seed: int,
) -> dict:
    """Sample a training slide's patches on its tissue into its HDF5 store."""
    slide, plan, tissue = _reopen(s, pixel_size_um)
    try:
        labels = open_labels(slide, s.label, classes)
        if labels is None:
            raise InvalidInputError(s.subject, s.image, "a training slide needs a label")
        low = labels.region(plan["tissue_downsample"], 0, 0, *tissue.shape)
        level = plan["level"]
        width, height = plan["dimensions"]
        origins = sample_slide_origins(
            tissue,
            low,
            plan["tissue_downsample"] / plan["downsample"],
            (height, width),
            plan["patch_size"],
            n_patches,
            foreground_fraction,
            np.random.default_rng(seed),
        )
        store = slide_paths(s.subject)["store"]
        write_slide_store(
            store,
            slide,
            level,
            labels,
            origins,
            plan["patch_size"],
            compression,
            compression_level,
            plan["hash"],
        )
    finally:
        slide.close()
    return {"subject": s.subject, "store": store}


def label_dice(
    scratch: str | Path, labels: LabelSource, downsample: float, n_classes: int
) -> list[float]:
    """Dice of each class 1..n_classes between the scratch label map and the reference labels
    at the same level, strip by strip (NaN where both are empty)."""
    inter = np.zeros(n_classes + 1)
    sums = np.zeros(n_classes + 1)
    with h5py.File(scratch, "r") as h5:
        pred_all = h5["label"]
        height, width = pred_all.shape
        for r0 in range(0, height, 256):
            pred = pred_all[r0 : r0 + 256]
            ref = labels.region(downsample, r0, 0, pred.shape[0], width)
            for c in range(1, n_classes + 1):
                p, t = pred == c, ref == c
                inter[c] += np.count_nonzero(p & t)
                sums[c] += np.count_nonzero(p) + np.count_nonzero(t)
    with np.errstate(invalid="ignore", divide="ignore"):
        return [float(x) for x in (2 * inter / sums)[1:]]


def segment_and_measure(
    s: Subject,
    predict: Predictor,
    classes: Sequence[str],
    pixel_size_um: float | None,
    overlap: float,
    sw_batch_size: int,
    max_memory_mb: float,
    overview_px: int,
) -> dict:
    """Segment a slide (:func:`cohortseg.wsi.inference.segment_slide`), write its pyramidal label
    TIFF and PNG overview, and return its statistics row: tissue and class areas (mm²), and
    Dice per class where the slide is labelled."""
    start = time.perf_counter()
    paths = slide_paths(s.subject)
    slide, plan, tissue = _reopen(s, pixel_size_um)
    scratch = scratch_path(paths["segmentation"])
    scratch.parent.mkdir(parents=True, exist_ok=True)
    try:
        counts = segment_slide(
            slide,
            plan["level"],
            predict,
            len(classes),
            tissue,
            plan["tissue_level"],
            scratch,
            window=plan["patch_size"][0],
            overlap=overlap,
            batch_size=sw_batch_size,
            max_memory_mb=max_memory_mb,
        )
        write_label_pyramid(scratch, paths["segmentation"], plan["pixel_size_um"])
        overview(slide, plan["level"], scratch, paths["overview"], overview_px)
        labels = open_labels(slide, s.label, classes)
        dice = (
            label_dice(scratch, labels, plan["downsample"], len(classes))
            if labels is not None
            else [float("nan")] * len(classes)
        )
    finally:
        slide.close()
        scratch.unlink(missing_ok=True)
    areas = class_areas_mm2(counts, plan["pixel_size_um"])
    row = {
        "subject": s.subject,
        "split": s.split,
        "level": plan["level"],
        "pixel_size_um": plan["pixel_size_um"],
        "tissue_mm2": plan["tissue_area_mm2"],
        "segmentation": paths["segmentation"],
        "overview": paths["overview"],
        "seconds": time.perf_counter() - start,
    }
    row.update({f"{c}_mm2": a for c, a in zip(classes, areas, strict=True)})
    row.update({f"{c}_dice": d for c, d in zip(classes, dice, strict=True)})
    return row


def write_shard_table(
    path: str | Path, rows: Sequence[dict], problems: Sequence[dict], columns: Sequence[str]
) -> None:
    """A shard's table: its slides' rows (with the SHA-256 of ``file_column`` = the first
    column after ``subject`` naming a file, so that a changed output reruns what follows),
    then its bad slides with their ``kind``, ``file`` and ``problem``."""
    from cohortseg.core.io import sha256_file, write_tsv

    file_column = columns[1]
    done = [{**r, "sha256": sha256_file(r[file_column])} for r in rows]
    write_tsv(path, [*done, *problems], [*columns, "sha256", *PROBLEM_COLUMNS[1:]])
