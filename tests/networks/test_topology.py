"""Tests for cohortseg.networks.topology: the network of ``model.name: auto`` by nnU-Net v2's
rules."""

from __future__ import annotations

import pytest
import torch
from monai.networks.nets import DynUNet

from cohortseg.networks.topology import (
    auto_network,
    deep_supervision_heads,
    divisor_of,
    dynunet_kwargs,
    pool_and_conv_props,
    stage_features,
    unet_topology,
)

# Expected values are what nnunetv2 2.8.1's get_pool_and_conv_props(spacing, patch, 4, 999999)
# returns for the same inputs (run in the benchmark's virtual environment).
NNUNET_CASES = [
    pytest.param(
        [1.7, 1.7, 2.4],
        [48, 48, 40],
        [[1, 1, 1], [2, 2, 2], [2, 2, 2], [2, 2, 2]],
        [[3, 3, 3], [3, 3, 3], [3, 3, 3], [3, 3, 3]],
        [48, 48, 40],
        id="demo-like, mildly anisotropic",
    ),
    pytest.param(
        [0.8, 0.8, 3.0],
        [64, 64, 24],
        [[1, 1, 1], [2, 2, 1], [2, 2, 2], [2, 2, 2], [2, 2, 1]],
        [[3, 3, 1], [3, 3, 3], [3, 3, 3], [3, 3, 3], [3, 3, 3]],
        [64, 64, 24],
        id="thick slices",
    ),
    pytest.param(
        [1.0, 1.0, 1.0],
        [64, 64, 64],
        [[1, 1, 1], [2, 2, 2], [2, 2, 2], [2, 2, 2], [2, 2, 2]],
        [[3, 3, 3]] * 5,
        [64, 64, 64],
        id="isotropic",
    ),
    pytest.param(
        [0.7, 0.7, 5.0],
        [160, 192, 20],
        [[1, 1, 1], [2, 2, 1], [2, 2, 1], [2, 2, 2], [2, 2, 2], [2, 2, 1]],
        [[3, 3, 1], [3, 3, 1], [3, 3, 3], [3, 3, 3], [3, 3, 3], [3, 3, 3]],
        [160, 192, 20],
        id="very thick slices",
    ),
    pytest.param(
        [1.0, 1.0, 1.0],
        [50, 37, 20],
        [[1, 1, 1], [2, 2, 2], [2, 2, 2], [2, 2, 1]],
        [[3, 3, 3]] * 4,
        [56, 40, 20],
        id="patch rounded up to the strides",
    ),
]


@pytest.mark.parametrize("spacing, patch, strides, kernels, padded", NNUNET_CASES)
def test_topology_is_nnunets(spacing, patch, strides, kernels, padded):
    network = auto_network(spacing, patch)

    assert network["strides"] == strides
    assert network["kernel_size"] == kernels
    assert network["patch_size"] == padded
    assert all(p % d == 0 for p, d in zip(padded, divisor_of(strides), strict=True))


def test_anisotropic_grids_pool_the_fine_axes_first_with_in_plane_kernels():
    network = auto_network([0.5, 0.5, 4.0], [128, 128, 16])

    # z (8 x coarser) is pooled only once x and y have caught up (0.5 -> 4 mm: 3 poolings)
    assert [s[2] for s in network["strides"][:4]] == [1, 1, 1, 1]
    assert [k[2] for k in network["kernel_size"][:3]] == [1, 1, 1]
    assert network["kernel_size"][-1] == [3, 3, 3]


def test_features_double_from_32_up_to_320():
    assert stage_features(7) == [32, 64, 128, 256, 320, 320, 320]


@pytest.mark.parametrize("stages, heads", [(2, 0), (3, 1), (4, 1), (5, 2), (6, 3)])
def test_deep_supervision_heads_leave_out_the_lowest_decoder_stage(stages, heads):
    assert deep_supervision_heads(stages) == heads


def test_dynunet_trains_on_every_head_and_infers_one_output():
    network = auto_network([0.8, 0.8, 3.0], [32, 32, 8])
    kwargs = {**dynunet_kwargs(network), "filters": [4, 8, 16, 16]}  # small: a fast test
    net = DynUNet(spatial_dims=3, in_channels=1, out_channels=3, **kwargs)
    x = torch.randn(2, 1, *network["patch_size"], generator=torch.Generator().manual_seed(0))

    heads = net.train()(x)
    with torch.no_grad():
        plain = net.eval()(x)

    n_heads = 1 + network["deep_supr_num"]
    assert heads.shape == (2, n_heads, 3, *network["patch_size"])
    assert plain.shape == (2, 3, *network["patch_size"])
    norms = [m for m in net.modules() if isinstance(m, torch.nn.InstanceNorm3d)]
    acts = [m for m in net.modules() if isinstance(m, torch.nn.LeakyReLU)]
    assert norms and all(m.affine for m in norms)
    assert acts and all(m.negative_slope == 0.01 for m in acts)


@pytest.mark.parametrize("spacing", [[1.7, 1.7, 2.4], [2.5, 2.5, 1.0], [0.5, 0.6, 5.0]])
def test_a_one_slice_patch_gets_kernel_1_and_stride_1_along_the_slice(spacing):
    network = auto_network(spacing, [64, 48, 1])

    assert all(k[2] == 1 and k[:2] == [3, 3] for k in network["kernel_size"])
    assert all(s[2] == 1 for s in network["strides"])
    assert network["patch_size"][2] == 1
    net = DynUNet(spatial_dims=3, in_channels=1, out_channels=3, **dynunet_kwargs(network))
    with torch.no_grad():
        assert net.eval()(torch.randn(1, 1, 64, 48, 1)).shape == (1, 3, 64, 48, 1)


def test_an_in_plane_network_has_up_to_512_features_as_nnunets_2d_unet():
    network = auto_network([0.5, 0.5, 1.0], [512, 512, 1])

    assert network["filters"] == [32, 64, 128, 256, 512, 512, 512, 512]
    assert max(auto_network([0.5, 0.5, 1.0], [512, 512, 64])["filters"]) == 320


def test_the_rules_take_nnunets_two_axes_as_the_slice_axis_left_out():
    strides, kernels = pool_and_conv_props([0.8, 0.6], [320, 384])
    strides_3d, kernels_3d = pool_and_conv_props([0.8, 0.6, 3.0], [320, 384, 1])

    assert [s + [1] for s in strides] == strides_3d
    assert [k + [1] for k in kernels] == kernels_3d


def test_a_topology_given_by_its_stages_is_the_one_auto_network_makes():
    network = auto_network([0.8, 0.8, 3.0], [64, 64, 24])

    same = unet_topology(
        network["strides"], network["kernel_size"], network["filters"], network["patch_size"]
    )

    assert same == network
