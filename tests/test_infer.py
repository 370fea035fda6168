"""Shard inference: outputs on each subject's native grid; one bad subject fails alone."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import torch

from cohortseg.errors import CohortsegError
from cohortseg.infer import ShardItem, check_shard, segment_shard
from cohortseg.models import build_network

MODEL = {"name": "UNet", "channels": [4, 8, 16], "strides": [2, 2], "num_res_units": 0}


@pytest.fixture
def checkpoint(tmp_path, small_plan) -> str:
    torch.manual_seed(0)
    net = build_network(MODEL, 4)
    path = tmp_path / "model.pt"
    torch.save({"model_state": net.state_dict(), "model_config": MODEL, "plan": small_plan}, path)
    return str(path)


INFERENCE = {"overlap": 0.25, "sw_batch_size": 2, "device": "cpu"}


def test_segmentations_have_the_native_shape_and_affine(tmp_path, phantom_files, checkpoint):
    items = [ShardItem(s, i, str(tmp_path / "out" / f"{s}.nii.gz")) for s, i, _ in phantom_files]
    assert segment_shard(checkpoint, items, INFERENCE) == []
    for item in items:
        src, out = nib.load(item.image), nib.load(item.output)
        assert out.shape == src.shape
        np.testing.assert_allclose(out.affine, src.affine, atol=1e-5)
        assert out.get_data_dtype() == np.uint8
        assert set(np.unique(np.asarray(out.dataobj))) <= {0, 1, 2, 3}


def test_a_missing_image_fails_only_that_subject(tmp_path, phantom_files, checkpoint):
    items = [ShardItem(s, i, str(tmp_path / f"{s}.nii.gz")) for s, i, _ in phantom_files]
    items.insert(
        1,
        ShardItem(
            "sub-missing", str(tmp_path / "nope.nii.gz"), str(tmp_path / "sub-missing.nii.gz")
        ),
    )
    failures = segment_shard(checkpoint, items, INFERENCE)
    assert [f.subject for f in failures] == ["sub-missing"]
    assert all((tmp_path / f"{s}.nii.gz").exists() for s, _, _ in phantom_files)
    assert not (tmp_path / "sub-missing.nii.gz").exists()
    with pytest.raises(CohortsegError, match="sub-missing.*nope.nii.gz.*does not exist"):
        check_shard(failures)
