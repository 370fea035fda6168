"""Explanations: Grad-CAM of a class on the plan's grid, on the native grid, drawn as a montage."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import torch

from cohortseg.core.errors import CohortsegError
from cohortseg.networks.build import build_network, resolve_model
from cohortseg.networks.topology import auto_network
from cohortseg.trust.explanations import (
    explained_layer,
    explanation_map,
    explanation_montage,
    grad_cam,
    write_explanations,
)

MODEL = {"name": "UNet", "channels": [4, 8, 16], "strides": [2, 2], "num_res_units": 1}
LAYER = "model.1.submodule.2"  # the decoder block at half resolution


def network() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_network(MODEL, 4).eval()


def test_grad_cam_has_the_image_shape_and_lies_in_0_1_whatever_the_shape():
    image = torch.randn(1, 21, 18, 13)  # not a multiple of the network's stride of 4
    net = network()
    heat = grad_cam(net, image, class_index=1, layer=LAYER)
    assert heat.shape == (21, 18, 13) and torch.isfinite(heat).all()
    assert float(heat.min()) >= 0 and float(heat.max()) <= 1 + 1e-6
    assert all(p.grad is None for p in net.parameters())  # no gradients left behind


def test_grad_cam_of_the_auto_network_with_anisotropic_strides_and_its_default_layer():
    """model.name auto: a DynUNet whose strides differ per axis (2×2×1 first), explained at
    its default layer, the decoder block at half resolution."""
    topology = auto_network([0.8, 0.8, 3.0], [32, 32, 8])
    topology.pop("patch_size")
    plan = {"network": topology}
    torch.manual_seed(0)
    net = build_network(
        resolve_model({"name": "auto", "kwargs": {"filters": [4, 8, 16, 32]}}, plan), 4
    )
    net.eval()
    layer = explained_layer(net)
    assert layer == f"upsamples.{len(net.upsamples) - 2}"
    image = torch.randn(1, 21, 18, 5)  # not a multiple of the strides along any axis
    heat = grad_cam(net, image, class_index=2, layer=layer)
    assert heat.shape == (21, 18, 5) and torch.isfinite(heat).all()
    assert float(heat.min()) >= 0 and float(heat.max()) <= 1 + 1e-6
    assert explained_layer(network()) == LAYER
    with pytest.raises(CohortsegError, match="'nope' is not a module of the UNet network"):
        explained_layer(network(), "nope")


def test_explanations_on_the_native_grid_for_the_selected_subjects(
    tmp_path, phantom_files, small_plan
):
    subject, image_path, label_path = phantom_files[0]
    image = nib.load(image_path)
    data = np.asarray(image.dataobj, dtype=np.float32)
    net = network()
    heat = explanation_map(net, small_plan, data, image.affine, 1, LAYER, torch.device("cpu"))
    assert heat.shape == data.shape and heat.dtype == np.float32
    assert 0 <= heat.min() and heat.max() <= 1 + 1e-6
    labels = np.asarray(nib.load(label_path).dataobj, dtype=np.uint8)
    explanation_montage(data, labels, heat, image.affine, 1, "organ", "t", tmp_path / "a.png")
    assert (tmp_path / "a.png").read_bytes()[:4] == b"\x89PNG"
    written = write_explanations(
        net,
        small_plan,
        {subject: {"split": "test", "why": "random sample"}},
        {subject: label_path},  # a label map stands in for the segmentation
        {subject: image_path},
        "shell",
        LAYER,
        tmp_path / "out",
        torch.device("cpu"),
    )
    assert [p.name for p in written] == [f"{subject}.png"]
