"""Why the network predicted a class where it did: a Grad-CAM map (``monai.visualize.GradCAM``)
of one class on a subject's whole preprocessed volume, mapped back to the native grid and drawn
over the same three slices as the subject's QC montage."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from monai.visualize import GradCAM  # noqa: E402

from cohortseg.core.colours import class_colour  # noqa: E402
from cohortseg.core.errors import CohortsegError  # noqa: E402
from cohortseg.preprocessing.plan import network_divisor  # noqa: E402
from cohortseg.preprocessing.prepare import prepare_image  # noqa: E402
from cohortseg.preprocessing.restore import restore_map  # noqa: E402
from cohortseg.viz.figures import save_figure
from cohortseg.viz.montage import (
    display_window,
    draw_view,
    load_image_and_segmentation,
    montage_slices,
)

log = logging.getLogger(__name__)


def explained_layer(net: torch.nn.Module, layer: str | None = None) -> str:
    """The module of ``net`` whose activations Grad-CAM weighs: ``layer`` (``report.
    explain_layer``) if given, else the decoder block at half resolution of the networks
    cohortseg builds: ``model.1.submodule.2`` for MONAI's ``UNet``, the second-to-last of
    ``upsamples`` for ``DynUNet`` (``model.name: auto``).

    Raises
    ------
    CohortsegError
        If ``net`` has no module of that name, or ``layer`` is not given for another network.
    """
    names = dict(net.named_modules())
    if layer is None:
        kind = type(net).__name__
        if kind == "UNet":
            layer = "model.1.submodule.2"
        elif kind == "DynUNet":
            layer = f"upsamples.{max(len(net.upsamples) - 2, 0)}"
        else:
            raise CohortsegError(
                f"report.explain_layer: set it to a module of the {kind} network (no default "
                f"for {kind}); e.g. one of {', '.join(list(names)[1:6])}"
            )
    if layer not in names:
        raise CohortsegError(
            f"report.explain_layer: {layer!r} is not a module of the {type(net).__name__} "
            f"network; e.g. one of {', '.join(list(names)[1:6])}"
        )
    return layer


def grad_cam(
    net: torch.nn.Module, image: torch.Tensor, class_index: int, layer: str
) -> torch.Tensor:
    """Grad-CAM of class ``class_index`` for a (1, X, Y, Z) preprocessed image: the ReLU of the
    activations of ``layer`` (a module name of ``net``) weighted by the mean gradient of the
    class's summed logits, upsampled to the image and scaled to [0, 1].

    The image is padded (edge values) to a multiple of the network's total stride per axis
    (``net.strides``: integers as MONAI's ``UNet`` has them, or one per axis and stage as
    ``DynUNet`` has them) and the map cropped back. Returns (X, Y, Z) float32 on the image's
    device.
    """
    # ints, or one per axis and stage: DynUNet's, or (s, s, 1) for 2D plans
    divisor = network_divisor(getattr(net, "strides", [1]))
    shape = image.shape[1:]
    pad = [(-n) % d for n, d in zip(shape, divisor, strict=True)]
    padded = F.pad(image[None], [p for k in reversed(pad) for p in (0, k)], mode="replicate")
    cam = GradCAM(nn_module=net, target_layers=layer)
    with torch.enable_grad():
        heat = cam(padded.requires_grad_(True), class_idx=class_index)
    net.zero_grad(set_to_none=True)
    return heat[0, 0, : shape[0], : shape[1], : shape[2]].detach().float()


def explanation_map(
    net: torch.nn.Module,
    plan: Mapping,
    image: np.ndarray,
    affine: np.ndarray,
    class_index: int,
    layer: str,
    device: torch.device,
) -> np.ndarray:
    """Grad-CAM (:func:`grad_cam`) of a native (X, Y, Z) image, computed on the plan's grid
    (the preprocessing of inference) and mapped back to the native grid (0 outside the body
    crop). Returns float32 in [0, 1] of the image's shape."""
    tensor, geometry = prepare_image(image, affine, plan, device)
    return restore_map(grad_cam(net, tensor, class_index, layer), geometry)


def explanation_montage(
    image: np.ndarray,
    labels: np.ndarray,
    heat: np.ndarray,
    affine: np.ndarray,
    class_index: int,
    class_name: str,
    title: str,
    path: str | os.PathLike[str],
) -> None:
    """PNG of the QC montage's three slices (:func:`cohortseg.viz.montage.montage_slices`; a 2D
    image's one) with the explanation ``heat`` (native grid, 0..1) as a heat map and the outline of
    the predicted ``class_name`` (label ``class_index``) in its class colour."""
    views = montage_slices(image, labels, affine, overlay=heat, single_view=True)
    fig, axes = plt.subplots(
        1, len(views), figsize=(4 * len(views), 4.6), facecolor="black", squeeze=False
    )
    window = display_window(image)
    for ax, view in zip(axes[0], views, strict=True):
        extent = draw_view(ax, view, window)
        shown = np.ma.masked_less(view["overlay"], 0.05)
        ax.imshow(shown, cmap="inferno", vmin=0, vmax=1, alpha=0.6, origin="lower", extent=extent)
        mask = (view["labels"] == class_index).astype(float)
        if mask.any():
            ax.contour(
                mask,
                levels=[0.5],
                colors=[class_colour(class_index)],
                origin="lower",
                extent=extent,
                linewidths=1.2,
            )
    fig.suptitle(
        f"{title}\nGrad-CAM of {class_name} (outlined: predicted {class_name})", color="white"
    )
    fig.tight_layout(rect=(0, 0, 1, 0.95))
    save_figure(fig, path, dpi=80)


def write_explanations(
    net: torch.nn.Module,
    plan: Mapping,
    selection: Mapping[str, Mapping],
    segmentations: Mapping[str, str],
    images: Mapping[str, str],
    class_name: str,
    layer: str,
    out_dir: str | os.PathLike[str],
    device: torch.device,
) -> list[Path]:
    """One explanation montage ``{out_dir}/{subject}.png`` for every subject of the QC
    montages' ``selection`` (subject → ``split``, ``why``); returns the paths written."""
    classes: Sequence[str] = plan["classes"]
    class_index = list(classes).index(class_name) + 1
    written = []
    for subject, sel in selection.items():
        image, labels, affine = load_image_and_segmentation(
            subject, images[subject], segmentations[subject]
        )
        heat = explanation_map(net, plan, image, affine, class_index, layer, device)
        path = Path(out_dir) / f"{subject}.png"
        title = f"{subject} ({sel['split']}): {sel['why']}"
        explanation_montage(image, labels, heat, affine, class_index, class_name, title, path)
        log.info("%s: explanation -> %s", subject, path)
        written.append(path)
    return written
