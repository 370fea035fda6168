"""MONAI bundle export: every file the specification and MONAI's tools expect, a folder that
appears whole or not at all, and ``configs/inference.json`` segmenting exactly as cohortseg's
inference does, with test-time augmentation and without (here run in-process; in a clean MONAI
environment by tests/inference/bundle/test_clean_env.py)."""

from __future__ import annotations

import sys
from contextlib import contextmanager
from pathlib import Path

import pytest
from monai.bundle import run as run_bundle

from cohortseg.core.errors import CohortsegError
from cohortseg.inference.bundle import export as export_module
from cohortseg.inference.bundle.export import BUNDLE_FILES, export_bundle, is_complete
from tests.inference.bundle.common import (
    INFERENCE,
    assert_same_segmentation,
    pipeline_segmentations,
)


def image_folder(phantoms, folder: Path) -> Path:
    """The phantoms' images as ``{subject}.nii.gz`` in one folder, as a user's images are."""
    folder.mkdir(exist_ok=True)
    for sid, image, _ in phantoms:
        (folder / f"{sid}.nii.gz").symlink_to(image)
    return folder


@contextmanager
def bundle_scripts(bundle: Path):
    """The bundle's ``scripts`` importable, as MONAI's runner and MONAI Label make it, and
    forgotten afterwards (another bundle's ``scripts`` is another package)."""
    saved = list(sys.path)
    forget = [m for m in sys.modules if m == "scripts" or m.startswith("scripts.")]
    for name in forget:
        del sys.modules[name]
    sys.path.insert(0, str(bundle))
    try:
        yield
    finally:
        sys.path[:] = saved
        for name in [m for m in sys.modules if m == "scripts" or m.startswith("scripts.")]:
            del sys.modules[name]


def test_bundle_has_every_file(exported):
    for name in BUNDLE_FILES:
        assert (exported.bundle / name).stat().st_size > 0, name
    assert is_complete(exported.bundle)
    assert not is_complete(exported.root)
    leftovers = [p.name for p in exported.root.iterdir() if p.name.startswith(".bundle.")]
    assert leftovers == [], "the staging folder is removed"


@pytest.mark.parametrize("tta", ["mirror", "none"])
def test_inference_config_segments_as_the_pipeline(exported, tmp_path, tta):
    phantoms = exported.phantoms[:1]  # all three in the clean environment (test_clean_env.py)
    images = image_folder(phantoms, tmp_path / "images")
    out = tmp_path / "bundle_out"
    overrides = {} if tta == INFERENCE["tta"] else {"inference#tta": tta}
    with bundle_scripts(exported.bundle):
        run_bundle(
            config_file=str(exported.bundle / "configs" / "inference.json"),
            bundle_root=str(exported.bundle),
            dataset_dir=str(images),
            output_dir=str(out),
            logging_file=False,
            **overrides,
        )
    ours = pipeline_segmentations(
        exported.net, exported.plan, phantoms, tmp_path / "own", {**INFERENCE, "tta": tta}
    )
    for subject, path in ours.items():
        assert_same_segmentation(out / f"{subject}_seg.nii.gz", path, min_dice=0.999)


def test_export_replaces_a_bundle_whole(exported, tmp_path):
    out = tmp_path / "bundle"
    (out / "models").mkdir(parents=True)
    (out / "stale.txt").write_text("from an older export")
    export_bundle(exported.checkpoint, out, INFERENCE)
    assert is_complete(out) and not (out / "stale.txt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle"]


def test_a_failed_export_leaves_the_folder_as_it_was(exported, tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise CohortsegError("ONNX export: differs")

    monkeypatch.setattr(export_module, "export_onnx", broken)
    with pytest.raises(CohortsegError, match="ONNX"):
        export_bundle(exported.checkpoint, tmp_path / "bundle", INFERENCE)
    assert list(tmp_path.iterdir()) == []


def test_an_unknown_tta_is_refused_at_export(exported, tmp_path):
    with pytest.raises(ValueError, match="tta"):
        export_bundle(exported.checkpoint, tmp_path / "bundle", {**INFERENCE, "tta": "rotate"})
