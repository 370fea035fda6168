"""A bundle's ``configs/metadata.json`` as the MONAI Bundle Specification defines it
(https://docs.monai.io/en/latest/mb_specification.html), the specification's rules checked
offline (:func:`metadata_problems`), and what a bundle needs installed to run
(:func:`runtime_requirements`)."""

from __future__ import annotations

from collections.abc import Mapping
from importlib.metadata import version as installed_version

#: The schema the metadata follows (the one MONAI 1.4 and later write; it names the packages a
#: bundle needs ``required_packages_version``, which MONAI 1.6 reads in place of the older
#: specification's ``optional_packages_version``).
SCHEMA = (
    "https://github.com/Project-MONAI/MONAI-extra-test-data/releases/download/0.8.1/"
    "meta_schema_20240725.json"
)

#: The specification's mandatory keys of ``metadata.json``.
REQUIRED_KEYS = (
    "version",
    "monai_version",
    "pytorch_version",
    "numpy_version",
    "required_packages_version",
    "task",
    "description",
    "authors",
    "copyright",
    "network_data_format",
)

#: The keys every tensor format specifier must have.
TENSOR_KEYS = (
    "type",
    "format",
    "modality",
    "num_channels",
    "spatial_shape",
    "dtype",
    "value_range",
    "is_patch_data",
    "channel_def",
)

#: The specification's tensor types and formats (its list of formats is "not exhaustive", but
#: a format it defines must be used with its meaning: :func:`metadata_problems`).
TENSOR_TYPES = ("image", "series", "tuples", "probabilities")
TENSOR_FORMATS = (
    "magnitude",
    "hounsfield",
    "kspace",
    "raw",
    "labels",
    "classes",
    "segmentation",
    "points",
    "normals",
    "indices",
    "sequence",
    "latent",
    "gradient",
)

#: pytorch-ignite runs the bundle's ``train.json`` and ``evaluate.json`` (MONAI's engines and
#: handlers); cohortseg itself does not use it, so its version is pinned here, not installed.
PYTORCH_IGNITE_VERSION = "0.5.5"

#: What runs a bundle besides Python: MONAI's bundle runner (``fire``) and what the portable
#: module imports, at the versions cohortseg computes with.
RUNTIME_PACKAGES = ("torch", "monai", "numpy", "nibabel", "fire")


def runtime_requirements() -> dict[str, str]:
    """Package → exact version that runs a bundle exported here: :data:`RUNTIME_PACKAGES` at
    their installed versions (local labels such as ``+cpu`` dropped) and ``pytorch-ignite`` at
    :data:`PYTORCH_IGNITE_VERSION`."""
    pins = {name: installed_version(name).split("+")[0] for name in RUNTIME_PACKAGES}
    return {**pins, "pytorch-ignite": PYTORCH_IGNITE_VERSION}


def bundle_metadata(checkpoint: Mapping, version: str, description: str) -> dict:
    """``configs/metadata.json`` for a cohortseg checkpoint (its ``plan``): the specification's
    mandatory keys, the class names, and the network's input and output.

    The input is one window of the preprocessed image: (1, *patch_size) float32, normalised as
    the plan says (``magnitude`` for z-scored MR, ``hounsfield`` for CT; unbounded, so no value
    range). The output is the network's C + 1 class scores per voxel, background first, whose
    argmax is the label: the specification's ``labels`` format.
    """
    plan = checkpoint["plan"]
    classes = list(plan["classes"])
    requirements = runtime_requirements()
    patch = [int(n) for n in plan["patch_size"]]
    ct = plan["normalization"] == "ct"
    return {
        "schema": SCHEMA,
        "version": version,
        "changelog": {version: description},
        "monai_version": requirements["monai"],
        "pytorch_version": requirements["torch"],
        "numpy_version": requirements["numpy"],
        "required_packages_version": {
            name: v for name, v in requirements.items() if name not in ("monai", "torch", "numpy")
        },
        "name": "cohortseg 3D segmentation",
        "task": "3D segmentation of " + ", ".join(classes),
        "description": description,
        "authors": "cohortseg",
        "copyright": "see the cohortseg repository",
        "intended_use": "research; review every segmentation",
        "data_type": "nifti",
        "image_classes": "one channel: the image, on the plan's grid, normalised as the plan says",
        "pred_classes": f"{len(classes) + 1} channels: class scores, background first",
        "network_data_format": {
            "inputs": {
                "image": {
                    "type": "image",
                    "format": "hounsfield" if ct else "magnitude",
                    "modality": "CT" if ct else "MR",
                    "num_channels": 1,
                    "spatial_shape": patch,
                    "dtype": "float32",
                    "value_range": [],
                    "is_patch_data": True,
                    "channel_def": {"0": "image"},
                }
            },
            "outputs": {
                "pred": {
                    "type": "image",
                    "format": "labels",
                    "modality": "n/a",
                    "num_channels": len(classes) + 1,
                    "spatial_shape": patch,
                    "dtype": "float32",
                    "value_range": [],
                    "is_patch_data": True,
                    "channel_def": {
                        "0": "background",
                        **{str(i): c for i, c in enumerate(classes, start=1)},
                    },
                }
            },
        },
    }


def metadata_problems(metadata: Mapping) -> list[str]:
    """What in ``metadata`` breaks the MONAI Bundle Specification's rules, in words (an empty
    list: none), checked without downloading its JSON schema: the mandatory keys and their
    types, and for each input and output tensor every specifier key, a known type, and a
    format used with the specification's meaning (``labels``: one channel per class, described
    by ``channel_def``; ``segmentation``: one channel of label values)."""
    problems = [f"missing mandatory key {key!r}" for key in REQUIRED_KEYS if key not in metadata]
    if "optional_packages_version" in metadata:
        problems.append("optional_packages_version is the old name of required_packages_version")
    for key in ("version", "monai_version", "pytorch_version", "numpy_version", "task"):
        if key in metadata and not isinstance(metadata[key], str):
            problems.append(f"{key} must be a string")
    if not isinstance(metadata.get("required_packages_version", {}), Mapping):
        problems.append("required_packages_version must map package names to versions")
    formats = metadata.get("network_data_format", {})
    for side in ("inputs", "outputs"):
        tensors = formats.get(side) if isinstance(formats, Mapping) else None
        if not isinstance(tensors, Mapping) or not tensors:
            problems.append(f"network_data_format.{side} must name at least one tensor")
            continue
        for name, spec in tensors.items():
            problems += [f"network_data_format.{side}.{name}: {p}" for p in tensor_problems(spec)]
    return problems


def tensor_problems(spec: Mapping) -> list[str]:
    """What in one tensor format specifier breaks the specification's rules (see
    :func:`metadata_problems`)."""
    problems = [f"missing {key!r}" for key in TENSOR_KEYS if key not in spec]
    if problems:
        return problems
    channels, channel_def = spec["num_channels"], spec["channel_def"]
    if spec["type"] not in TENSOR_TYPES:
        problems.append(f"type {spec['type']!r} is none of {', '.join(TENSOR_TYPES)}")
    if not isinstance(channels, int) or isinstance(channels, bool) or channels < 1:
        problems.append("num_channels must be a positive integer")
    shape = spec["spatial_shape"]
    if not isinstance(shape, list) or not 1 <= len(shape) <= 3:
        problems.append("spatial_shape must be a list of one to three sizes")
    elif not all((isinstance(n, int) and n > 0) or isinstance(n, str) for n in shape):
        problems.append("spatial_shape sizes must be positive integers or expressions")
    if not isinstance(spec["dtype"], str):
        problems.append("dtype must be a string such as float32")
    value_range = spec["value_range"]
    if not isinstance(value_range, list) or len(value_range) not in (0, 2):
        problems.append("value_range must be [MIN, MAX] or []")
    elif value_range and not value_range[0] <= value_range[1]:
        problems.append("value_range must be [MIN, MAX] with MIN <= MAX")
    if not isinstance(spec["is_patch_data"], bool):
        problems.append("is_patch_data must be true or false")
    if not isinstance(channel_def, Mapping):
        problems.append("channel_def must map channel indices to descriptions")
    elif spec["format"] in ("labels", "classes") and isinstance(channels, int):
        if sorted(channel_def, key=int) != [str(i) for i in range(channels)]:
            problems.append(
                f"format {spec['format']} has one channel per class: channel_def must describe "
                f"channels 0..{channels - 1}"
            )
    if spec["format"] == "segmentation" and channels != 1:
        problems.append(
            f"format segmentation is one channel of label values, not {channels}; class "
            "scores per channel are format labels"
        )
    return problems
