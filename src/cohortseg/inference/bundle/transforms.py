"""What a MONAI bundle runs on ``{"image": path, "label": path}`` dictionaries: cohortseg's way
in (read, reorient, resample, crop, normalise), the way back to the native grid and the
writer, as MONAI-style dictionary transforms, and the loop of ``configs/inference.json``.

Each bundle carries these in ``scripts/cohortseg_portable.py`` together with the source of every
cohortseg function they call (:mod:`cohortseg.inference.bundle.portable`), so this module may
use cohortseg functions, numpy, nibabel, torch and monai, and nothing that a clean MONAI
environment lacks. The geometry of a prepared image travels as JSON text under ``geometry``, so
that a ``DataLoader`` collates it like a file name.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from monai.utils import convert_to_tensor

from cohortseg.core.geometry import check_same_grid
from cohortseg.core.io import load_nifti, save_nifti
from cohortseg.preprocessing.prepare import Geometry, prepare_canonical, prepare_label, to_canonical
from cohortseg.preprocessing.restore import restore_labels

log = logging.getLogger(__name__)


def geometry_to_json(geometry: Geometry) -> str:
    """A :class:`~cohortseg.preprocessing.prepare.Geometry` as JSON text."""
    return json.dumps(geometry.to_dict())


def geometry_from_json(text: str) -> Geometry:
    """The :class:`~cohortseg.preprocessing.prepare.Geometry` that :func:`geometry_to_json`
    wrote (shapes and the crop as tuples again)."""
    fields = json.loads(text)
    return Geometry(
        native_shape=tuple(fields["native_shape"]),
        native_affine=fields["native_affine"],
        orientation=fields["orientation"],
        canonical_shape=tuple(fields["canonical_shape"]),
        resampled_shape=tuple(fields["resampled_shape"]),
        crop=tuple(tuple(c) for c in fields["crop"]),
        affine=fields["affine"],
    )


def image_name(path: str | Path) -> str:
    """An image file's name without ``.nii`` or ``.nii.gz``: how the bundle names a subject."""
    return Path(path).name.removesuffix(".gz").removesuffix(".nii")


class PrepareImaged:
    """Read the NIfTI image named by ``data[keys]`` and take it to the plan's grid as cohortseg's
    inference does (:func:`~cohortseg.preprocessing.prepare.prepare_canonical`).

    Returns ``data`` with ``data[keys]`` the (1, X', Y', Z') float32 tensor on ``device``,
    ``geometry`` (JSON text: how to map a prediction back) and ``image_path`` (the file).
    """

    def __init__(self, keys: str, plan: Mapping, device: str | torch.device = "cpu") -> None:
        self.key, self.plan, self.device = keys, dict(plan), device

    def __call__(self, data: Mapping) -> dict:
        path = str(data[self.key])
        image = to_canonical(*load_nifti(path, image_name(path), dtype=None))
        tensor, geometry = prepare_canonical(image, self.plan, self.device)
        return {
            **data,
            self.key: tensor,
            "geometry": geometry_to_json(geometry),
            "image_path": path,
        }


class PrepareLabeld:
    """Read the label map named by ``data[keys]``, check that it lies on its image's native grid
    (the ``geometry`` that :class:`PrepareImaged` recorded), and put it in ``data[keys]``:

    - ``grid="plan"``: on the plan's grid, (1, X', Y', Z') uint8
      (:func:`~cohortseg.preprocessing.prepare.prepare_label`, as training takes it);
    - ``grid="native"``: as read, (1, X, Y, Z) uint8 (for Dice on the native grid, as
      cohortseg's evaluation scores).

    Raises ``InvalidInputError`` (naming the file) if the label is off the image's grid by more
    than ``affine_tolerance_mm``.
    """

    def __init__(
        self,
        keys: str,
        grid: str = "plan",
        affine_tolerance_mm: float = 1.0,
        device: str | torch.device = "cpu",
    ) -> None:
        if grid not in ("plan", "native"):
            raise ValueError(f"grid must be plan or native, not {grid!r}")
        self.key, self.grid, self.tolerance_mm, self.device = (
            keys,
            grid,
            affine_tolerance_mm,
            device,
        )

    def __call__(self, data: Mapping) -> dict:
        geometry = geometry_from_json(data["geometry"])
        path = str(data[self.key])
        subject = image_name(data.get("image_path", path))
        label, affine = load_nifti(path, subject, dtype=np.uint8)
        if self.grid == "plan":
            tensor = prepare_label(
                label,
                geometry,
                self.device,
                label_affine=affine,
                subject=subject,
                label_path=path,
                affine_tolerance_mm=self.tolerance_mm,
            )
        else:
            native_affine = np.asarray(geometry.native_affine)
            shape = geometry.native_shape
            check_same_grid(
                subject, shape, native_affine, label.shape, affine, path, self.tolerance_mm
            )
            tensor = torch.as_tensor(label, device=self.device)[None]
        return {**data, self.key: tensor, "label_path": path}


class RestoreLabelsd:
    """Class probabilities ``data[keys]`` (C, X', Y', Z') on the plan's grid → the label map on
    the image's native grid (:func:`~cohortseg.preprocessing.restore.restore_labels`): an (X, Y,
    Z) uint8 numpy array, or with ``channel_first`` a (1, X, Y, Z) uint8 tensor (for MONAI's
    one-hot transforms and metrics).

    Also records the native grid as ``data[f"{ref_image}_meta_dict"]`` (``affine``,
    ``original_affine``, ``spatial_shape``), where MONAI Label's ``Restored`` and writer look
    for it, so that MONAI Label writes the label map with the image's geometry.
    """

    def __init__(self, keys: str, ref_image: str = "image", channel_first: bool = False) -> None:
        self.key, self.ref_image, self.channel_first = keys, ref_image, channel_first

    def __call__(self, data: Mapping) -> dict:
        geometry = geometry_from_json(data["geometry"])
        probabilities = convert_to_tensor(data[self.key], track_meta=False)
        labels = restore_labels(probabilities, geometry).astype(np.uint8)
        affine = np.asarray(geometry.native_affine, dtype=np.float64)
        meta = {"affine": affine, "original_affine": affine, "spatial_shape": labels.shape}
        out = torch.as_tensor(labels)[None] if self.channel_first else labels
        return {**data, self.key: out, f"{self.ref_image}_meta_dict": meta}


class SaveLabelsd:
    """Write the label map ``data[keys]`` ((X, Y, Z) or (1, X, Y, Z)) with the input's affine as
    ``{output_dir}/{name}_seg.nii.gz`` (``name``: :func:`image_name` of the image file), uint8,
    atomically. Returns ``data`` with ``output_path``."""

    def __init__(self, keys: str, output_dir: str) -> None:
        self.key, self.output_dir = keys, output_dir

    def __call__(self, data: Mapping) -> dict:
        path = Path(self.output_dir) / f"{image_name(data['image_path'])}_seg.nii.gz"
        labels = np.asarray(convert_to_tensor(data[self.key], track_meta=False).cpu())
        labels = labels.reshape(labels.shape[-3:])
        affine = np.asarray(geometry_from_json(data["geometry"]).native_affine)
        save_nifti(path, labels, affine, np.uint8)
        return {**data, "output_path": str(path)}


def segment_images(
    images: Sequence[str],
    preprocessing: Callable,
    network: torch.nn.Module,
    inferer: Callable,
    postprocessing: Callable,
    writer: Callable,
    device: str | torch.device,
) -> list[str]:
    """The bundle's ``run``: each image through ``preprocessing``, the ``inferer`` with the
    network (cohortseg's predictor: class probabilities, with test-time augmentation where
    configured), ``postprocessing`` (back to the native grid) and the ``writer``.

    Returns the label maps written, in the order of ``images``.

    Raises
    ------
    ValueError
        If ``images`` is empty (a ``dataset_dir`` without NIfTI files, say).
    """
    if not images:
        raise ValueError("no images to segment: is --dataset_dir a folder of .nii(.gz) files?")
    network.eval()
    written = []
    with torch.no_grad():
        for k, path in enumerate(images, start=1):
            data = preprocessing({"image": path})
            data["pred"] = inferer(data["image"][None].to(device), network)[0]
            written.append(writer(postprocessing(data))["output_path"])
            log.info("%s -> %s [%d/%d]", path, written[-1], k, len(images))
    return written
