"""The bundle's TorchScript and ONNX copies of the network agree with it: class probabilities
within PROBABILITY_TOLERANCE on windows, and the same segmentations of the phantoms."""

from __future__ import annotations

import json

import pytest
import torch
from monai.data import load_net_with_metadata

from cohortseg.core.errors import CohortsegError
from cohortseg.core.io import load_nifti
from cohortseg.inference.bundle import model_files
from cohortseg.inference.bundle.model_files import (
    PROBABILITY_TOLERANCE,
    OnnxNetwork,
    example_windows,
    export_onnx,
    probability_difference,
)
from cohortseg.inference.predictor import predict_with_tta
from cohortseg.preprocessing.prepare import prepare_image
from tests.inference.bundle.common import INFERENCE, dice


def exports(exported) -> dict[str, torch.nn.Module]:
    models = exported.bundle / "models"
    return {
        "TorchScript": torch.jit.load(models / "model.ts"),
        "ONNX": OnnxNetwork(models / "model.onnx"),
    }


@torch.no_grad()
def test_the_exports_agree_with_the_network_on_windows(exported):
    patch = tuple(exported.plan["patch_size"])
    windows = example_windows(patch, 3, seed=1)  # another batch size than traced
    larger = example_windows(tuple(2 * n for n in patch), 1, seed=2)
    for name, model in exports(exported).items():
        for x in (windows, larger):
            difference = probability_difference(exported.net(x), model(x))
            assert difference <= PROBABILITY_TOLERANCE, (name, x.shape, difference)


@torch.no_grad()
def test_the_exports_segment_the_phantoms_as_the_network(exported):
    inference = {**INFERENCE, "tta": "none"}  # the network's windows are what is compared
    for _, image, _ in exported.phantoms:
        tensor, _ = prepare_image(*load_nifti(image), exported.plan)
        probs, _ = predict_with_tta(exported.net, tensor, exported.plan, inference)
        labels = probs.argmax(0).numpy()
        for name, model in exports(exported).items():
            theirs, _ = predict_with_tta(model, tensor, exported.plan, inference)
            assert float((theirs - probs).abs().max()) <= PROBABILITY_TOLERANCE, name
            assert dice(theirs.argmax(0).numpy(), labels) >= 0.999, name


def test_the_torchscript_file_carries_the_bundles_metadata(exported):
    _, meta, extras = load_net_with_metadata(
        exported.bundle / "models" / "model.ts", more_extra_files=["inference.json"]
    )
    assert meta["version"] == "1.0.0"
    assert meta["network_data_format"]["outputs"]["pred"]["format"] == "labels"
    assert b"cohortseg_portable.Predictor" in extras["inference.json"]


def test_the_onnx_model_takes_any_batch_and_spatial_size(exported):
    meta = json.loads((exported.bundle / "configs" / "metadata.json").read_text())
    assert meta["exports"]["model.onnx"]["dynamic_axes"] == ["batch", "x", "y", "z"]
    assert meta["exports"]["model.onnx"]["max_probability_difference"] <= PROBABILITY_TOLERANCE


class Fixed(torch.nn.Module):
    """A network that takes one window size only (a linear layer over the voxels)."""

    def __init__(self, voxels: int) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(voxels, 2 * voxels)

    def forward(self, x):
        b, _, *shape = x.shape
        return self.linear(x.flatten(2)).view(b, 2, *shape)


def test_an_onnx_model_that_cannot_vary_in_size_keeps_the_patch_size(tmp_path):
    windows = example_windows((4, 4, 2), 2)
    net = Fixed(32).eval()
    found = export_onnx(net, windows, tmp_path / "model.onnx")
    assert found["dynamic_axes"] == ["batch"]
    model = OnnxNetwork(tmp_path / "model.onnx")
    x = example_windows((4, 4, 2), 5, seed=3)
    with torch.no_grad():
        assert probability_difference(net(x), model(x)) <= PROBABILITY_TOLERANCE


def test_an_export_that_differs_is_refused_and_not_written(exported, tmp_path, monkeypatch):
    monkeypatch.setattr(model_files, "PROBABILITY_TOLERANCE", -1.0)
    windows = example_windows(tuple(exported.plan["patch_size"]), 1)
    with pytest.raises(CohortsegError, match="TorchScript export .* differ"):
        model_files.export_torchscript(exported.net, windows, tmp_path / "model.ts", {})
    with pytest.raises(CohortsegError, match="ONNX export .* differ"):
        model_files.export_onnx(exported.net, windows, tmp_path / "model.onnx")
    assert list(tmp_path.iterdir()) == []
