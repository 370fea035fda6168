"""Quality-control montages: which subjects a person should look at (worst Dice, most unusual
volumes, a deterministic random sample) and the montage of each, three orthogonal slices with
the segmentation overlaid."""

from __future__ import annotations

import hashlib
import logging
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from cohortseg.core.io import parse_number
from cohortseg.viz.montage import load_image_and_segmentation, qc_montage

log = logging.getLogger(__name__)


def select_qc_subjects(
    stats_rows: Sequence[Mapping],
    metric_rows: Sequence[Mapping],
    classes: Sequence[str],
    qc_sample: int,
    qc_worst: int,
    qc_unusual: int,
    seed: int = 0,
) -> list[dict]:
    """Which subjects get a QC montage, and why.

    The ``qc_worst`` subjects with the lowest mean Dice (over the classes, labelled subjects
    only), the ``qc_unusual`` ones with the largest |robust z| of a class volume, and
    ``qc_sample`` more drawn at random. The draw is deterministic: subjects are ranked by a hash
    of the seed and their id, so adding subjects to the cohort keeps the earlier picks unless a
    new subject ranks before them. Subjects whose segmentation failed are never picked.

    Returns
    -------
    list of dict
        ``subject``, ``split`` and ``why`` (reasons joined by "; "), worst Dice first, then
        unusual volumes, then the sample.
    """
    rows = {r["subject"]: r for r in stats_rows if r.get("status") != "failed"}
    chosen: dict[str, list[str]] = {}

    def pick(subject: str, why: str) -> None:
        chosen.setdefault(subject, []).append(why)

    scored = []
    for r in metric_rows:
        dice = [parse_number(r.get(f"dice_{c}"), math.nan) for c in classes]
        if r["subject"] in rows and all(np.isfinite(dice)):
            scored.append((float(np.mean(dice)), r["subject"]))
    for mean_dice, subject in sorted(scored)[:qc_worst]:
        pick(subject, f"low Dice (mean {mean_dice:.3f})")

    most_unusual: dict[str, tuple[float, str, float]] = {}  # subject -> (|z|, class, z)
    for subject, r in rows.items():
        for c in classes:
            z = parse_number(r.get(f"volume_z_{c}"), math.nan)
            if np.isfinite(z) and abs(z) > most_unusual.get(subject, (-1.0,))[0]:
                most_unusual[subject] = (abs(z), c, z)
    for subject in sorted(most_unusual, key=lambda s: (-most_unusual[s][0], s))[:qc_unusual]:
        _, c, z = most_unusual[subject]
        pick(subject, f"unusual {c} volume (z={z:+.1f})")

    def rank(subject: str) -> str:
        return hashlib.sha256(f"{seed}/{subject}".encode()).hexdigest()

    drawn = [s for s in sorted(rows, key=rank) if s not in chosen][:qc_sample]
    for subject in drawn:
        pick(subject, "random sample")
    return [
        {"subject": s, "split": rows[s].get("split", ""), "why": "; ".join(why)}
        for s, why in chosen.items()
    ]


def write_qc_montages(
    selection: Sequence[Mapping],
    stats_rows: Sequence[Mapping],
    images: Mapping[str, str],
    classes: Sequence[str],
    out_dir: str | os.PathLike[str],
) -> list[Path]:
    """One montage ``{out_dir}/{subject}.png`` per selected subject: its image (from
    ``images``, subject → path) with the segmentation named in the statistics table; returns
    the paths written."""
    by_subject = {r["subject"]: r for r in stats_rows}
    written = []
    for sel in selection:
        subject = sel["subject"]
        image, labels, affine = load_image_and_segmentation(
            subject, images[subject], by_subject[subject]["segmentation"]
        )
        path = Path(out_dir) / f"{subject}.png"
        title = f"{subject} ({sel['split']}): {sel['why']}"
        qc_montage(image, labels, affine, classes, title, path)
        log.info("%s: QC montage -> %s", subject, path)
        written.append(path)
    return written
