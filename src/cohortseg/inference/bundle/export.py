"""MONAI bundle export: a trained model as a MONAI bundle (``configs/metadata.json``,
``configs/inference.json``, ``models/model.pt``, ``docs/README.md``) that
``python -m monai.bundle run --config_file configs/inference.json`` runs on a folder of NIfTI
images, and that MONAI Label's ``monaibundle`` app or MONAI Deploy can serve.

The bundle segments exactly as cohortseg does: its ``preprocessing`` and ``postprocessing`` are
the transforms of this module, which call cohortseg's own preprocessing (reorient, resample,
crop, normalise: :func:`cohortseg.preprocessing.prepare.prepare_canonical`) and restoration to the
native grid (:func:`cohortseg.preprocessing.restore.restore_canonical_labels`), and its ``inferer``
is MONAI's Gaussian-blended sliding window with the plan's patch size. So the environment that runs
the bundle needs cohortseg installed (``pip install /path/to/cohortseg``), besides MONAI.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import monai
import numpy as np
import torch

from cohortseg.core.geometry import undo_reorient
from cohortseg.core.io import atomic_write, save_nifti, write_json, write_text
from cohortseg.inference.shard import ShardItem, read_volume
from cohortseg.networks.build import network_kwargs, read_checkpoint
from cohortseg.preprocessing.prepare import prepare_canonical
from cohortseg.preprocessing.restore import restore_canonical_labels

#: What ``configs/inference.json`` reads images from and writes label maps to, by default
#: (override on the command line: ``--dataset_dir DIR --output_dir DIR``).
DEFAULT_DATASET_DIR = "data"


DEFAULT_OUTPUT_DIR = "eval"


class PrepareImaged:
    """Read the NIfTI file named by ``data[key]`` and take it to the plan's grid as cohortseg's
    inference does: ``data[key]`` becomes the (1, X', Y', Z') float32 tensor, ``geometry`` how
    to map a prediction back, ``image_path`` the file."""

    def __init__(self, keys: str, plan: Mapping, device: str | torch.device = "cpu") -> None:
        self.key, self.plan, self.device = keys, plan, device

    def __call__(self, data: Mapping) -> dict:
        path = str(data[self.key])
        canonical = read_volume(ShardItem(Path(path).name, path, ""))
        tensor, geometry = prepare_canonical(canonical, self.plan, self.device)
        return {**data, self.key: tensor, "geometry": geometry, "image_path": path}


class RestoreLabelsd:
    """Class probabilities ``data[key]`` (C, X', Y', Z') on the plan's grid → the (X, Y, Z)
    uint8 label map on the input's native grid, in ``data[key]`` (a numpy array).

    Also records the native grid as ``data[f"{ref_image}_meta_dict"]`` (``affine``,
    ``original_affine``, ``spatial_shape``), where MONAI Label's ``Restored`` and ``Writer``
    look for it: so that MONAI Label writes the label map with the image's geometry."""

    def __init__(self, keys: str, ref_image: str = "image") -> None:
        self.key, self.ref_image = keys, ref_image

    def __call__(self, data: Mapping) -> dict:
        geometry = data["geometry"]
        labels = restore_canonical_labels(torch.as_tensor(data[self.key]), geometry)
        native = undo_reorient(labels.cpu().numpy(), np.asarray(geometry.orientation))
        affine = np.asarray(geometry.native_affine, dtype=np.float64)
        meta = {"affine": affine, "original_affine": affine, "spatial_shape": native.shape}
        return {**data, self.key: native.astype(np.uint8), f"{self.ref_image}_meta_dict": meta}


class SaveLabelsd:
    """Write ``data[key]`` with the input's affine as ``{output_dir}/{name}_seg.nii.gz``
    (``name``: the image file's name without ``.nii[.gz]``)."""

    def __init__(self, keys: str, output_dir: str) -> None:
        self.key, self.output_dir = keys, output_dir

    def __call__(self, data: Mapping) -> dict:
        name = Path(data["image_path"]).name.removesuffix(".gz").removesuffix(".nii")
        path = Path(self.output_dir) / f"{name}_seg.nii.gz"
        save_nifti(path, data[self.key], np.asarray(data["geometry"].native_affine), np.uint8)
        return {**data, "output_path": str(path)}


def run_inference(
    images: Sequence[str],
    preprocessing: Callable,
    network: torch.nn.Module,
    inferer: Callable,
    postprocessing: Callable,
    writer: Callable,
    device: str | torch.device,
) -> list[str]:
    """The bundle's ``run``: each image through preprocessing, the inferer with the network
    (bf16 autocast on CUDA, as cohortseg's inference), postprocessing (softmax, back to the
    native grid) and the writer. Returns the label maps written."""
    network.eval()
    device = torch.device(device)
    written = []
    with torch.no_grad():
        for path in images:
            data = preprocessing({"image": path})
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
                logits = inferer(data["image"][None].to(device), network)
            data["pred"] = logits[0].float()
            written.append(writer(postprocessing(data))["output_path"])
    return written


def inference_config(checkpoint: Mapping, inference: Mapping) -> dict:
    """``configs/inference.json`` for a cohortseg checkpoint (its ``model_config`` and
    ``plan``) and the ``inference`` config section (``overlap``, ``sw_batch_size``)."""
    plan = checkpoint["plan"]
    model = checkpoint["model_config"]
    kwargs = {k: list(v) if isinstance(v, tuple) else v for k, v in network_kwargs(model).items()}
    return {
        "imports": ["$import glob", "$import os"],
        "bundle_root": ".",
        "device": "$torch.device('cuda' if torch.cuda.is_available() else 'cpu')",
        "dataset_dir": DEFAULT_DATASET_DIR,
        "output_dir": DEFAULT_OUTPUT_DIR,
        "datalist": "$sorted(glob.glob(os.path.join(@dataset_dir, '*.nii*')))",
        "plan": dict(plan),
        "network_def": {
            "_target_": f"monai.networks.nets.{model['name']}",
            "spatial_dims": 3,
            "in_channels": 1,
            "out_channels": len(plan["classes"]) + 1,
            **kwargs,
        },
        "network": "$@network_def.to(@device)",
        "load_weights": (
            "$@network.load_state_dict(torch.load(os.path.join(@bundle_root, 'models', "
            "'model.pt'), map_location=@device, weights_only=True))"
        ),
        # Compose, as MONAI Label's bundle tasks expect of pre- and postprocessing
        "preprocessing": {
            "_target_": "Compose",
            "transforms": [
                {
                    "_target_": "cohortseg.inference.bundle.PrepareImaged",
                    "keys": "image",
                    "plan": "@plan",
                    "device": "@device",
                }
            ],
        },
        "inferer": {
            "_target_": "SlidingWindowInferer",
            "roi_size": list(plan["patch_size"]),
            "sw_batch_size": int(inference["sw_batch_size"]),
            "overlap": float(inference["overlap"]),
            "mode": "gaussian",
        },
        "postprocessing": {
            "_target_": "Compose",
            "transforms": [
                {"_target_": "Activationsd", "keys": "pred", "softmax": True},
                {"_target_": "cohortseg.inference.bundle.RestoreLabelsd", "keys": "pred"},
            ],
        },
        # apart from postprocessing: MONAI Label writes the label map itself
        "writer": {
            "_target_": "cohortseg.inference.bundle.SaveLabelsd",
            "keys": "pred",
            "output_dir": "@output_dir",
        },
        "segment": {
            "_target_": "cohortseg.inference.bundle.run_inference",
            "_requires_": "@load_weights",
            "images": "@datalist",
            "preprocessing": "@preprocessing",
            "network": "@network",
            "inferer": "@inferer",
            "postprocessing": "@postprocessing",
            "writer": "@writer",
            "device": "@device",
        },
        "run": ["@segment"],
    }


def bundle_metadata(checkpoint: Mapping, version: str, description: str) -> dict:
    """``configs/metadata.json`` with the keys the MONAI bundle specification requires
    (``version``, ``monai_version``, ``pytorch_version``, ``numpy_version``,
    ``optional_packages_version``, ``task``, ``description``, ``authors``, ``copyright``,
    ``network_data_format``) and the class names."""
    from importlib.metadata import version as package_version

    classes = list(checkpoint["plan"]["classes"])
    labels = {"0": "background", **{str(i): c for i, c in enumerate(classes, start=1)}}
    return {
        "schema": "https://github.com/Project-MONAI/MONAI-extra-test-data/releases/download/"
        "0.8.1/meta_schema_20220324.json",
        "version": version,
        "changelog": {version: description},
        "monai_version": monai.__version__,
        "pytorch_version": torch.__version__.split("+")[0],
        "numpy_version": np.__version__,
        "optional_packages_version": {
            "cohortseg": package_version("cohortseg"),
            "nibabel": package_version("nibabel"),
        },
        "name": "cohortseg 3D segmentation",
        "task": "3D segmentation of " + ", ".join(classes),
        "description": description,
        "authors": "cohortseg",
        "copyright": "see the cohortseg repository",
        "intended_use": "research; review every segmentation",
        "data_type": "nifti",
        "network_data_format": {
            "inputs": {
                "image": {
                    "type": "image",
                    "format": "magnitude",
                    "modality": "MR or CT",
                    "num_channels": 1,
                    "spatial_shape": list(checkpoint["plan"]["patch_size"]),
                    "dtype": "float32",
                    "value_range": [],
                    "is_patch_data": True,
                    "channel_def": {"0": "image"},
                }
            },
            "outputs": {
                "pred": {
                    "type": "image",
                    "format": "segmentation",
                    "num_channels": len(classes) + 1,
                    "spatial_shape": list(checkpoint["plan"]["patch_size"]),
                    "dtype": "float32",
                    "value_range": [0, 1],
                    "is_patch_data": True,
                    "channel_def": labels,
                }
            },
        },
    }


def export_bundle(
    checkpoint_path: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    inference: Mapping,
    version: str = "0.1.0",
    description: str = "cohortseg model",
) -> Path:
    """Write a MONAI bundle of a cohortseg checkpoint into ``out_dir``. Returns ``out_dir``."""
    checkpoint = read_checkpoint(checkpoint_path)
    out = Path(out_dir)
    write_json(out / "configs" / "inference.json", inference_config(checkpoint, inference))
    write_json(out / "configs" / "metadata.json", bundle_metadata(checkpoint, version, description))
    with atomic_write(out / "models" / "model.pt") as tmp:
        torch.save(checkpoint["model_state"], tmp)
    write_text(out / "docs" / "README.md", bundle_readme(checkpoint["plan"]["classes"]))
    return out


def bundle_readme(classes: Sequence[str]) -> str:
    """``docs/README.md``: what the bundle segments and how to run it."""
    return f"""# cohortseg model

3D segmentation of {", ".join(classes)} (label values 1..{len(classes)}; 0 background), trained
by cohortseg. Preprocessing and restoration to the input's grid are cohortseg's own, so the
environment needs cohortseg installed (`pip install /path/to/cohortseg`) besides MONAI.

Run it on a folder of NIfTI images (writes `{{name}}_seg.nii.gz` per image):

    python -m monai.bundle run --config_file configs/inference.json \\
        --bundle_root . --dataset_dir /path/to/images --output_dir /path/to/segmentations

Serve it to 3D Slicer with MONAI Label's `monaibundle` app (the bundle folder under the app's
`model/` folder, `--conf models <bundle name>`), or package it with MONAI Deploy.
"""
