"""The model registry: which checkpoint is in use for every rule that needs "the model", and
model versions: every trained model kept as ``results/models/v{N}/`` with its lineage (parent
version, the hash of its training subjects, its config, its metrics on the fixed val and test
splits), which one is current, and where fine-tuning starts (``training.init_from``).

Layout::

    results/models/v{N}/best.pt            the checkpoint (what inference loads)
    results/models/v{N}/training_log.tsv   its training log
    results/models/v{N}/lineage.json       version, parent, training_subjects_hash, config, ...
    results/models/v{N}/metrics.json       mean Dice per class on the val and test splits
    results/models/v{N}/bundle/            the model as a MONAI bundle (cohortseg.inference.bundle)
    results/models/current.json            {"version": N, "checkpoint": ...}: the current one
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from cohortseg.core.cohort import Subject
from cohortseg.core.errors import CohortsegError
from cohortseg.core.io import (
    copy_atomically,
    parse_number,
    read_json,
    read_tsv,
    sha256_file,
    write_json,
)

#: Where the training rule writes the model it trains.
TRAINED_MODEL = "results/model/best.pt"


MODELS_DIR = "results/models"


CURRENT = f"{MODELS_DIR}/current.json"


VERSIONS_TABLE = f"{MODELS_DIR}/versions.tsv"


_VERSION = re.compile(r"^v([0-9]+)$")


def version_dir(n: int, models_dir: str | os.PathLike[str] = MODELS_DIR) -> Path:
    """The folder of version ``n``."""
    return Path(models_dir) / f"v{n}"


def version_checkpoint(n: int, models_dir: str | os.PathLike[str] = MODELS_DIR) -> str:
    """The checkpoint of version ``n`` (``results/models/v{n}/best.pt``)."""
    return str(version_dir(n, models_dir) / "best.pt")


def list_versions(models_dir: str | os.PathLike[str] = MODELS_DIR) -> list[int]:
    """The versions kept under ``models_dir`` (those with a lineage), ascending."""
    if not os.path.isdir(models_dir):
        return []
    found = [_VERSION.match(p.name) for p in Path(models_dir).iterdir()]
    return sorted(
        int(m[1]) for m in found if m and (Path(models_dir) / m[0] / "lineage.json").exists()
    )


def read_lineage(n: int, models_dir: str | os.PathLike[str] = MODELS_DIR) -> dict:
    """Version ``n``'s ``lineage.json``."""
    return read_json(version_dir(n, models_dir) / "lineage.json")


def training_subjects_hash(subjects: Sequence[Subject]) -> str:
    """SHA-256 (16 hex digits) of the training set: the ids and label files of the ``train``
    subjects, in id order. A correction that adds or relabels a training subject changes it."""
    train = sorted((s.subject, s.label or "") for s in subjects if s.split == "train")
    return hashlib.sha256(json.dumps(train).encode()).hexdigest()[:16]


def current_version(models_dir: str | os.PathLike[str] = MODELS_DIR) -> int | None:
    """The current version (``current.json``), else the newest kept, else ``None``."""
    current = Path(models_dir) / "current.json"
    if current.exists():
        return int(read_json(current)["version"])
    versions = list_versions(models_dir)
    return versions[-1] if versions else None


def resolve_init_from(
    setting: str | None,
    train_hash: str,
    corrected: bool,
    models_dir: str | os.PathLike[str] = MODELS_DIR,
) -> str | None:
    """The checkpoint training starts from (``training.init_from``), or ``None``: from scratch.

    Parameters
    ----------
    setting
        ``None``; ``auto``; ``v{N}``; or a checkpoint path.
    train_hash
        :func:`training_subjects_hash` of this run's cohort.
    corrected
        Whether corrections add or relabel subjects in this run.
    models_dir
        Where the versions are kept.

    ``auto`` fine-tunes the current version when corrections changed its training set. It is
    stable: once a version was trained on ``train_hash``, ``auto`` names that version's own
    parent again, so the next run has nothing to retrain.
    """
    if setting is None:
        return None
    if m := _VERSION.match(setting):
        path = version_checkpoint(int(m[1]), models_dir)
        if not os.path.exists(path):
            raise CohortsegError(f"training.init_from: {setting}: {path} does not exist")
        return path
    if setting != "auto":
        return setting
    for n in reversed(list_versions(models_dir)):
        lineage = read_lineage(n, models_dir)
        if lineage["training_subjects_hash"] == train_hash:
            parent = lineage.get("parent")
            return version_checkpoint(parent, models_dir) if parent is not None else None
    current = current_version(models_dir)
    if not corrected or current is None:
        return None
    return version_checkpoint(current, models_dir)


def inference_checkpoint(
    model_version: int | None, models_dir: str | os.PathLike[str] = MODELS_DIR
) -> str:
    """The checkpoint that segments the cohort: the model this run trains
    (``results/model/best.pt``) when ``model_version`` is ``None``, else that kept version's.

    Raises
    ------
    CohortsegError
        If version ``model_version`` is not kept under ``models_dir``.
    """
    if model_version is None:
        return TRAINED_MODEL
    path = version_checkpoint(model_version, models_dir)
    if not os.path.exists(path):
        kept = ", ".join(f"v{n}" for n in list_versions(models_dir)) or "none"
        raise CohortsegError(
            f"model_version: {model_version}: {path} does not exist (kept: {kept})"
        )
    return path


def version_of_checkpoint(
    path: str | None, models_dir: str | os.PathLike[str] = MODELS_DIR
) -> int | None:
    """The version whose checkpoint ``path`` is (``results/models/v{N}/best.pt``), else None."""
    if path is None:
        return None
    m = _VERSION.match(Path(path).parent.name)
    same_dir = Path(path).parent.parent.resolve() == Path(models_dir).resolve()
    return int(m[1]) if m and same_dir else None


def model_sha256(checkpoint: str | os.PathLike[str]) -> str:
    """The SHA-256 (hex) of a checkpoint's bytes: how every product names the model that made
    it (an inference shard's manifest, the calibration, the robustness table, the
    explanations, the run page; a DICOM SEG's AlgorithmVersion holds its first 16 digits), and
    what a kept version's lineage records (``sha256``)."""
    return sha256_file(checkpoint)


def model_identity(
    checkpoint: str | os.PathLike[str], models_dir: str | os.PathLike[str] = MODELS_DIR
) -> dict[str, str]:
    """Which model ``checkpoint`` is: ``checkpoint``, ``model_sha256`` (:func:`model_sha256`)
    and ``version`` (``v{N}``: the kept version with the same bytes; empty if none is)."""
    digest = model_sha256(checkpoint)
    kept = [n for n in list_versions(models_dir) if read_lineage(n, models_dir)["sha256"] == digest]
    return {
        "checkpoint": str(checkpoint),
        "model_sha256": digest,
        "version": f"v{kept[0]}" if kept else "",
    }


def register_version(
    model_dir: str | os.PathLike[str],
    parent: int | None,
    train_hash: str,
    config: Mapping,
    models_dir: str | os.PathLike[str] = MODELS_DIR,
) -> int:
    """Keep the model trained in ``model_dir`` (``best.pt``, ``training_log.tsv``) as the next
    version, with its lineage, unless a version with the same ``best.pt`` exists; make it
    current. Returns its version number."""
    best = Path(model_dir) / "best.pt"
    digest = model_sha256(best)
    versions = list_versions(models_dir)
    n = next((v for v in versions if read_lineage(v, models_dir)["sha256"] == digest), None)
    if n is None:
        n = (versions[-1] if versions else 0) + 1
        out = version_dir(n, models_dir)
        copy_atomically(best, out / "best.pt")
        copy_atomically(Path(model_dir) / "training_log.tsv", out / "training_log.tsv")
        log_rows = read_tsv(out / "training_log.tsv")
        write_json(
            out / "lineage.json",
            {
                "version": n,
                "parent": parent,
                "training_subjects_hash": train_hash,
                "sha256": digest,
                "epochs_trained": len(log_rows),
                "config": dict(config),
            },
        )
    set_current(n, models_dir)
    return n


def set_current(n: int, models_dir: str | os.PathLike[str] = MODELS_DIR) -> None:
    """Make version ``n`` the current one (``current.json``)."""
    current = {"version": n, "checkpoint": version_checkpoint(n, models_dir)}
    path = Path(models_dir) / "current.json"
    if not path.exists() or read_json(path) != current:  # unchanged: same file, same time
        write_json(path, current)


def split_dice(
    metric_rows: Sequence[Mapping], classes: Sequence[str], splits: Sequence[str] = ("val", "test")
) -> dict[str, dict[str, float]]:
    """Mean Dice per class on each of ``splits`` (NaN where the split has no labelled subject):
    ``{split: {class: dice}}``."""
    out = {}
    for split in splits:
        rows = [r for r in metric_rows if r.get("split") == split]
        out[split] = {}
        for c in classes:
            values = [parse_number(r.get(f"dice_{c}"), math.nan) for r in rows]
            finite = [v for v in values if v is not None and np.isfinite(v)]
            out[split][c] = float(np.mean(finite)) if finite else math.nan
    return out


def version_rows(
    classes: Sequence[str], models_dir: str | os.PathLike[str] = MODELS_DIR
) -> list[dict]:
    """One row per version: parent, training subjects' hash, epochs, and Dice per class on val
    and test (``metrics.json``; empty where the version was never evaluated)."""
    rows = []
    for n in list_versions(models_dir):
        lineage = read_lineage(n, models_dir)
        metrics_path = version_dir(n, models_dir) / "metrics.json"
        metrics = read_json(metrics_path) if metrics_path.exists() else {}
        row = {
            "version": f"v{n}",
            "parent": "" if lineage["parent"] is None else f"v{lineage['parent']}",
            "training_subjects_hash": lineage["training_subjects_hash"],
            "epochs_trained": lineage["epochs_trained"],
        }
        for split in ("val", "test"):
            for c in classes:
                row[f"{split}_dice_{c}"] = metrics.get(split, {}).get(c, "")
        rows.append(row)
    return rows


def version_columns(classes: Sequence[str]) -> list[str]:
    """Columns of ``versions.tsv``."""
    dice = [f"{split}_dice_{c}" for split in ("val", "test") for c in classes]
    return ["version", "parent", "training_subjects_hash", "epochs_trained", *dice]
