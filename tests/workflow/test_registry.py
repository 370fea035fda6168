"""Model versions: kept with their lineage, the current one, where fine-tuning starts."""

from __future__ import annotations

import pytest

from cohortseg.core.cohort import Subject
from cohortseg.core.errors import CohortsegError
from cohortseg.core.io import read_json, write_json, write_tsv
from cohortseg.workflow.registry import (
    inference_checkpoint,
    list_versions,
    read_lineage,
    register_version,
    resolve_init_from,
    set_current,
    split_dice,
    training_subjects_hash,
    version_checkpoint,
    version_of_checkpoint,
    version_rows,
)


def trained(tmp_path, name: str, weights: bytes):
    """A model folder as the train rule leaves it (the checkpoint's bytes stand for weights)."""
    out = tmp_path / name
    out.mkdir()
    (out / "best.pt").write_bytes(weights)
    write_tsv(out / "training_log.tsv", [{"epoch": 1}, {"epoch": 2}], ["epoch"])
    return out


def test_versions_are_kept_once_with_their_lineage(tmp_path):
    models = tmp_path / "models"
    assert register_version(trained(tmp_path, "a", b"one"), None, "h1", {"k": 1}, models) == 1
    assert register_version(trained(tmp_path, "b", b"two"), 1, "h2", {"k": 2}, models) == 2
    # the same model registered again (a rerun that changed nothing) is the same version
    assert register_version(tmp_path / "a", None, "h1", {"k": 1}, models) == 1
    assert list_versions(models) == [1, 2]
    lineage = read_lineage(2, models)
    assert lineage["parent"] == 1 and lineage["training_subjects_hash"] == "h2"
    assert lineage["epochs_trained"] == 2 and lineage["config"] == {"k": 2}
    assert read_json(models / "current.json")["version"] == 1
    set_current(2, models)
    assert read_json(models / "current.json") == {
        "version": 2,
        "checkpoint": version_checkpoint(2, models),
    }
    assert version_of_checkpoint(version_checkpoint(2, models), models) == 2
    assert version_of_checkpoint("results/model/best.pt", models) is None


def test_auto_fine_tunes_the_current_version_once(tmp_path):
    """auto: from scratch at first; with corrections, from the current version; once that
    fine-tuned version exists, the same parent again (nothing to retrain)."""
    models = tmp_path / "models"
    assert resolve_init_from("auto", "h1", corrected=False, models_dir=models) is None
    register_version(trained(tmp_path, "a", b"one"), None, "h1", {}, models)
    assert resolve_init_from("auto", "h1", corrected=False, models_dir=models) is None
    v1 = version_checkpoint(1, models)
    assert resolve_init_from("auto", "h2", corrected=True, models_dir=models) == v1
    register_version(trained(tmp_path, "b", b"two"), 1, "h2", {}, models)
    assert resolve_init_from("auto", "h2", corrected=True, models_dir=models) == v1
    assert resolve_init_from("auto", "h3", corrected=True, models_dir=models) == (
        version_checkpoint(2, models)
    )
    assert resolve_init_from("v1", "h3", corrected=True, models_dir=models) == v1
    assert resolve_init_from(None, "h3", corrected=True, models_dir=models) is None
    with pytest.raises(CohortsegError, match="init_from: v7"):
        resolve_init_from("v7", "h3", corrected=True, models_dir=models)


def test_going_back_to_a_version_and_comparing_versions(tmp_path):
    models = tmp_path / "models"
    assert inference_checkpoint(None, models) == "results/model/best.pt"
    with pytest.raises(CohortsegError, match="model_version: 1: .* does not exist"):
        inference_checkpoint(1, models)
    register_version(trained(tmp_path, "a", b"one"), None, "h1", {}, models)
    assert inference_checkpoint(1, models) == version_checkpoint(1, models)
    metrics = [
        {"subject": "a", "split": "test", "dice_organ": "0.5"},
        {"subject": "b", "split": "test", "dice_organ": "0.7"},
        {"subject": "c", "split": "infer", "dice_organ": ""},
    ]
    dice = split_dice(metrics, ["organ"])
    assert dice["test"]["organ"] == pytest.approx(0.6)
    write_json(models / "v1" / "metrics.json", dice)
    rows = version_rows(["organ"], models)
    assert rows[0]["version"] == "v1" and rows[0]["test_dice_organ"] == pytest.approx(0.6)


def test_training_subjects_hash_changes_with_a_correction():
    subjects = [Subject("a", "a.nii", "a_l.nii", "train"), Subject("b", "b.nii", None, "infer")]
    corrected = [subjects[0], Subject("b", "b.nii", "results/corrections/b.nii.gz", "train")]
    assert training_subjects_hash(subjects) != training_subjects_hash(corrected)
    assert training_subjects_hash(subjects) == training_subjects_hash(subjects[::-1])
