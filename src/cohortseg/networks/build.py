"""Networks: MONAI architectures built by name from the ``model`` config section (or from the
plan, ``model.name: auto``), and trained networks loaded from checkpoints."""

from __future__ import annotations

import os
from collections.abc import Mapping

import monai.networks.nets as nets
import torch

from cohortseg.core.errors import CohortsegError


def read_checkpoint(checkpoint: str | os.PathLike[str]) -> dict:
    """A training checkpoint's contents (weights, ``model_config``, ``plan``, progress), on the
    CPU.

    Raises
    ------
    CohortsegError
        If the file is missing or is not a cohortseg checkpoint.
    """
    if not os.path.exists(checkpoint):
        raise CohortsegError(f"model checkpoint {checkpoint} does not exist")
    try:
        state = torch.load(checkpoint, map_location="cpu", weights_only=False)
    except Exception as exc:  # torch raises many types for a broken or foreign file
        raise CohortsegError(f"model checkpoint {checkpoint}: cannot read: {exc}") from exc
    if not isinstance(state, dict) or not {"model_state", "model_config", "plan"} <= set(state):
        raise CohortsegError(f"model checkpoint {checkpoint} is not a cohortseg checkpoint")
    return state


def load_model(checkpoint: str, device: torch.device) -> tuple[torch.nn.Module, dict]:
    """Load a training checkpoint; returns the network in eval mode on ``device`` and the plan
    it was trained with (weights are cast to the network's float32, whatever the training
    precision)."""
    state = read_checkpoint(checkpoint)
    plan = state["plan"]
    net = build_network(state["model_config"], len(plan["classes"]) + 1)
    net.load_state_dict(state["model_state"])
    return net.to(device).eval(), plan


def resolve_model(model: Mapping, plan: Mapping) -> dict:
    """The ``model`` section a run builds its network from: as given, or for ``name: auto``
    the plan's network (:func:`cohortseg.networks.topology.auto_network`) as ``DynUNet`` arguments.
    The resolved section is what checkpoints keep, so a trained model rebuilds without its plan's
    rules. For a 2D plan (``spatial_dims: 2``) ``UNet`` is made in-plane
    (:func:`in_plane_unet`); ``auto`` is in-plane by its topology.

    Raises
    ------
    CohortsegError
        If ``name`` is ``auto`` and the plan has no network (made with another ``model.name``).
    """
    if model["name"] == "UNet" and int(plan.get("spatial_dims", 3)) == 2:
        return in_plane_unet(model)
    if model["name"] != "auto":
        return dict(model)
    from cohortseg.networks.topology import dynunet_kwargs

    if "network" not in plan:
        raise CohortsegError(
            "model.name: auto needs the network in the plan, but this plan was made for another "
            "model.name; re-plan (snakemake -R plan) with model.name: auto"
        )
    kwargs = {**dynunet_kwargs(plan["network"]), **(model.get("kwargs") or {})}
    return {"name": "DynUNet", "kwargs": kwargs}


def in_plane_unet(model: Mapping) -> dict:
    """The ``UNet`` section for 2D plans: per-axis strides ``(s, s, 1)`` and kernels
    ``(3, 3, 1)``, so that the 3D network convolves and downsamples in-plane only.

    2D images travel the volume pipeline as one-slice volumes (X, Y, 1) and (B, C, X, Y, 1)
    tensors, so patches, augmentation, sliding windows and restoring stay one code path; a
    kernel of 1 and a stride of 1 along the slice axis make the network a 2D U-Net in all but
    its tensors' rank (the same weights count as ``spatial_dims=2``), where MONAI's default
    strides of 2 would fail on an axis of one voxel. Keys the user set in ``kwargs`` win.
    """
    kwargs = dict(model.get("kwargs") or {})
    kwargs.setdefault("strides", tuple((int(s), int(s), 1) for s in model["strides"]))
    kwargs.setdefault("kernel_size", (3, 3, 1))
    kwargs.setdefault("up_kernel_size", (3, 3, 1))
    return {**model, "kwargs": kwargs}


def network_kwargs(model: Mapping) -> dict:
    """The constructor arguments of the ``model`` section's network besides ``spatial_dims``,
    ``in_channels`` and ``out_channels``: ``kwargs``, and for ``UNet`` its channels, strides,
    residual units and instance norm."""
    kwargs = dict(model.get("kwargs") or {})
    if model["name"] == "UNet":
        kwargs.setdefault("channels", tuple(model["channels"]))
        kwargs.setdefault("strides", tuple(model["strides"]))
        kwargs.setdefault("num_res_units", int(model["num_res_units"]))
        kwargs.setdefault("norm", "instance")
    return kwargs


def build_network(
    model: Mapping, n_classes: int, spatial_dims: int = 3, in_channels: int = 1
) -> torch.nn.Module:
    """Build a segmentation network of ``spatial_dims`` (3 for volumes, 2 for slides) with
    ``in_channels`` input channels (1 for volumes, 3 for RGB slides) and ``n_classes`` outputs.

    ``model['name']`` is ``UNet`` (channels, strides, num_res_units from config) or any other
    class of ``monai.networks.nets`` taking ``spatial_dims``, ``in_channels`` and
    ``out_channels``; extra constructor arguments go in ``model['kwargs']``
    (:func:`network_kwargs`). ``auto`` is resolved from the plan first (:func:`resolve_model`).
    """
    name = model["name"]
    if name == "auto":
        raise CohortsegError("model.name: auto is built from the plan: resolve_model(model, plan)")
    kwargs = network_kwargs(model)
    cls = getattr(nets, name, None)
    if cls is None or not isinstance(cls, type):
        raise CohortsegError(f"model.name: {name!r} is not a network in monai.networks.nets")
    try:
        return cls(
            spatial_dims=spatial_dims, in_channels=in_channels, out_channels=n_classes, **kwargs
        )
    except (TypeError, ValueError) as exc:
        raise CohortsegError(f"model: cannot build {name} with {kwargs}: {exc}") from exc
