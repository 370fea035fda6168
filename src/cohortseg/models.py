"""Networks: MONAI architectures built by name from the ``model`` config section."""

from __future__ import annotations

from collections.abc import Mapping

import monai.networks.nets as nets
import torch

from cohortseg.errors import CohortsegError


def build_network(model: Mapping, n_classes: int) -> torch.nn.Module:
    """Build a 3D segmentation network with one input channel and ``n_classes`` outputs.

    ``model['name']`` is ``UNet`` (channels, strides, num_res_units from config) or any other
    class of ``monai.networks.nets`` taking ``spatial_dims``, ``in_channels`` and
    ``out_channels``; extra constructor arguments go in ``model['kwargs']``.
    """
    name = model["name"]
    kwargs = dict(model.get("kwargs") or {})
    if name == "UNet":
        kwargs.setdefault("channels", tuple(model["channels"]))
        kwargs.setdefault("strides", tuple(model["strides"]))
        kwargs.setdefault("num_res_units", int(model["num_res_units"]))
        kwargs.setdefault("norm", "instance")
    cls = getattr(nets, name, None)
    if cls is None or not isinstance(cls, type):
        raise CohortsegError(f"model.name: {name!r} is not a network in monai.networks.nets")
    try:
        return cls(spatial_dims=3, in_channels=1, out_channels=n_classes, **kwargs)
    except (TypeError, ValueError) as exc:
        raise CohortsegError(f"model: cannot build {name} with {kwargs}: {exc}") from exc
