"""The bundle's portable module: cohortseg's code copied so that the bundle runs without
cohortseg, and behaving exactly as the library it was copied from."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from cohortseg.core.errors import CohortsegError
from cohortseg.core.io import load_nifti
from cohortseg.inference.bundle import transforms as library
from cohortseg.inference.bundle.portable import ROOTS, portable_source
from cohortseg.inference.predictor import Predictor
from cohortseg.inference.shard import write_shard_manifest
from tests.inference.bundle.common import INFERENCE, load_portable


def test_the_module_imports_no_cohortseg_and_every_name_it_uses_is_defined(exported, tmp_path):
    path = exported.bundle / "scripts" / "cohortseg_portable.py"
    tree = ast.parse(path.read_text())
    imported = [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
    imported += [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
    assert imported and not [m for m in imported if m.startswith("cohortseg")]
    assert {"isal", "h5py", "matplotlib", "scipy"}.isdisjoint(m.split(".")[0] for m in imported)
    ruff = Path(sys.executable).parent / "ruff"
    # pyflakes' rules: undefined names, redefinitions, unused imports
    done = subprocess.run(
        [str(ruff), "check", "--isolated", "--no-cache", "--select", "F", str(path)],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout
    top = {n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))}
    assert {root.__name__ for root in ROOTS} <= top


def test_the_module_is_the_library_of_the_day(exported):
    assert (exported.bundle / "scripts" / "cohortseg_portable.py").read_text() == portable_source()


def test_it_segments_exactly_as_the_library(exported, tmp_path):
    """Preparation, the predictor (with test-time augmentation), restoration and writing: the
    copied code gives the library's results bit for bit."""
    portable = load_portable(exported.bundle)
    _, image, label = exported.phantoms[0]
    plan = exported.plan
    for module, out in ((library, tmp_path / "library"), (portable, tmp_path / "portable")):
        data = module.PrepareImaged("image", plan)({"image": image, "label": label})
        data = module.PrepareLabeld("label", grid="plan")(data)
        inferer = Predictor if module is library else portable.Predictor
        data["pred"] = inferer(plan, INFERENCE)(data["image"][None], exported.net)[0]
        restored = module.RestoreLabelsd("pred")(dict(data))
        module.SaveLabelsd("pred", str(out))(restored)
        if module is library:
            expected, expected_labels = data, restored["pred"]
    assert torch.equal(data["image"], expected["image"])
    assert torch.equal(data["label"], expected["label"])
    assert json.loads(data["geometry"]) == json.loads(expected["geometry"])
    assert torch.equal(data["pred"], expected["pred"])
    np.testing.assert_array_equal(restored["pred"], expected_labels)
    ours, our_affine = load_nifti(tmp_path / "library" / "sub-00_image_seg.nii.gz", dtype=None)
    theirs, affine = load_nifti(tmp_path / "portable" / "sub-00_image_seg.nii.gz", dtype=None)
    np.testing.assert_array_equal(theirs, ours)
    np.testing.assert_array_equal(affine, our_affine)
    assert theirs.dtype == np.uint8


def test_a_label_off_its_images_grid_is_refused_naming_the_file(exported, tmp_path):
    portable = load_portable(exported.bundle)
    _, image, _ = exported.phantoms[0]
    _, _, other_label = exported.phantoms[1]
    data = portable.PrepareImaged("image", exported.plan)({"image": image})
    shifted = tmp_path / "shifted.nii.gz"
    label, affine = load_nifti(other_label, dtype=np.uint8)
    affine = affine.copy()
    affine[0, 3] += 10.0
    from cohortseg.core.io import save_nifti

    save_nifti(shifted, label, affine)
    with pytest.raises(Exception, match="shifted.nii.gz.*affine differs"):
        portable.PrepareLabeld("label", grid="native")({**data, "label": str(shifted)})


def test_code_that_cannot_be_copied_is_named():
    # write_shard_manifest uses `io.write_manifest` of `from cohortseg.core import io`
    with pytest.raises(
        CohortsegError, match="shard: it imports io, which is not a function or class"
    ):
        portable_source([write_shard_manifest])
