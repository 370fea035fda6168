"""Tests for cohortseg.networks.build: networks built by name from the ``model`` config section."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from cohortseg.core.errors import CohortsegError
from cohortseg.networks.build import build_network

CONFIG = yaml.safe_load((Path(__file__).parents[2] / "config.yaml").read_text())


def forward(net: torch.nn.Module, shape=(1, 1, 32, 32, 32)) -> torch.Tensor:
    net.eval()
    with torch.no_grad():
        return net(torch.randn(shape, generator=torch.Generator().manual_seed(0)))


def test_default_unet_maps_a_volume_to_class_scores_of_the_same_size():
    n_classes = len(CONFIG["classes"]) + 1

    net = build_network(CONFIG["model"], n_classes)

    assert type(net).__name__ == "UNet"
    assert forward(net).shape == (1, n_classes, 32, 32, 32)


def test_unet_takes_channels_and_strides_from_the_config():
    model = {"name": "UNet", "channels": [4, 8, 16], "strides": [2, 2], "num_res_units": 0}

    net = build_network(model, 2)

    assert forward(net, (2, 1, 16, 24, 8)).shape == (2, 2, 16, 24, 8)
    first_conv = next(m for m in net.modules() if isinstance(m, torch.nn.Conv3d))
    assert first_conv.out_channels == 4


def test_another_monai_network_by_name_with_kwargs():
    model = {"name": "BasicUNet", "kwargs": {"features": [4, 4, 8, 8, 16, 4]}}

    net = build_network(model, 3)

    assert type(net).__name__ == "BasicUNet"
    assert forward(net).shape == (1, 3, 32, 32, 32)
    first_conv = next(m for m in net.modules() if isinstance(m, torch.nn.Conv3d))
    assert first_conv.out_channels == 4


@pytest.mark.parametrize("name", ["NoSuchNet", "unet", "basic_unet"])
def test_unknown_network_names_the_config_key(name):
    with pytest.raises(CohortsegError, match=f"model.name: '{name}'"):
        build_network({"name": name}, 2)


def test_bad_network_arguments_are_a_cohortseg_error():
    model = {"name": "BasicUNet", "kwargs": {"no_such_argument": 1}}

    with pytest.raises(CohortsegError, match="model: cannot build BasicUNet"):
        build_network(model, 2)


@pytest.mark.parametrize(
    "model",
    [
        {"name": "UNet", "channels": [8, 16, 32, 64], "strides": [2, 2], "num_res_units": 1},
        {"name": "BasicUNet", "kwargs": {"features": [4, 4, 8, 8, 16]}},
    ],
    ids=["unet-strides-not-matching-channels", "basicunet-five-features"],
)
def test_inconsistent_network_arguments_are_a_cohortseg_error(model):
    with pytest.raises(CohortsegError, match="model"):
        build_network(model, 2)


# ------------------------------------------------------------------ model.name: auto


def auto_plan() -> dict:
    from cohortseg.networks.topology import auto_network

    network = auto_network([0.8, 0.8, 3.0], [32, 32, 8])
    return {"classes": ["a", "b"], "patch_size": network.pop("patch_size"), "network": network}


SMALL = {"name": "auto", "kwargs": {"filters": [4, 8, 16, 16]}}  # the plan's topology, narrow


def test_auto_builds_the_plans_dynunet_and_its_checkpoint_rebuilds_it(tmp_path):
    from cohortseg.networks.build import load_model, resolve_model

    plan = auto_plan()
    model = resolve_model(SMALL, plan)
    torch.manual_seed(0)
    net = build_network(model, 3)
    path = tmp_path / "best.pt"
    torch.save({"model_state": net.state_dict(), "model_config": model, "plan": plan}, path)

    loaded, _ = load_model(str(path), torch.device("cpu"))

    assert type(loaded).__name__ == "DynUNet"
    assert model["kwargs"]["strides"] == plan["network"]["strides"]
    x = torch.randn(1, 1, 32, 32, 8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        # eval mode: one output, no deep-supervision heads; the same weights, the same numbers
        assert torch.equal(loaded(x), net.eval()(x))
        assert loaded(x).shape == (1, 3, 32, 32, 8)


def test_auto_without_a_network_in_the_plan_says_to_replan():
    from cohortseg.networks.build import resolve_model

    with pytest.raises(CohortsegError, match="re-plan"):
        resolve_model({"name": "auto", "kwargs": {}}, {"classes": ["a"]})
    with pytest.raises(CohortsegError, match="resolve_model"):
        build_network({"name": "auto"}, 2)


def test_the_default_unet_of_a_2d_plan_is_in_plane_and_its_checkpoint_rebuilds_it(tmp_path):
    from cohortseg.networks.build import load_model, resolve_model

    model = resolve_model(CONFIG["model"], {"spatial_dims": 2})
    net = build_network(model, 4)

    assert model["kwargs"]["strides"] == ((2, 2, 1),) * len(CONFIG["model"]["strides"])
    assert forward(net, (1, 1, 40, 24, 1)).shape == (1, 4, 40, 24, 1)
    # as many weights as MONAI's 2D UNet of the same config: 3 x 3 x 1 kernels
    flat = build_network(CONFIG["model"], 4, spatial_dims=2)
    assert sum(p.numel() for p in net.parameters()) == sum(p.numel() for p in flat.parameters())
    plan = {"classes": ["a", "b", "c"], "spatial_dims": 2}
    torch.save(
        {"model_state": net.state_dict(), "model_config": model, "plan": plan}, tmp_path / "m.pt"
    )
    loaded, _ = load_model(str(tmp_path / "m.pt"), torch.device("cpu"))
    x = torch.randn(1, 1, 16, 16, 1)
    with torch.no_grad():
        assert torch.equal(loaded(x), net.eval()(x))


def test_a_3d_plan_keeps_the_unet_section_as_given():
    from cohortseg.networks.build import resolve_model

    assert resolve_model(CONFIG["model"], {"spatial_dims": 3}) == CONFIG["model"]
    assert resolve_model(CONFIG["model"], {}) == CONFIG["model"]
