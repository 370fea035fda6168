"""The dataset fingerprint and the preprocessing plan derived from it (nnU-Net style)."""

from __future__ import annotations

import hashlib
import json
import logging
import math
from collections.abc import Mapping, Sequence

import numpy as np

from cohortseg.core.cohort import Subject
from cohortseg.core.errors import CohortsegError
from cohortseg.core.geometry import reorient, spacing_of
from cohortseg.core.io import load_nifti
from cohortseg.networks.budget import batch_size
from cohortseg.networks.topology import (
    auto_network,
    feature_map_size,
    padded_patch_size,
    unet_topology,
)
from cohortseg.preprocessing.configurations import (
    chosen_configuration,
    plan_configurations,
    resampled_median_shape,
)

log = logging.getLogger(__name__)


FINGERPRINT_SAMPLES_PER_SUBJECT = 10_000


def fingerprint(
    subjects: Sequence[Subject],
    seed: int = 0,
    samples_per_subject: int | None = FINGERPRINT_SAMPLES_PER_SUBJECT,
) -> dict:
    """Measure the training subjects: spacing and shape (canonical RAS axes) and foreground
    intensities.

    Returns a JSON-able dict with per-subject ``spacings_mm`` and ``shapes`` and
    ``intensity`` statistics (mean, std, 0.5/50/99.5 percentiles) of voxels labelled
    foreground, from a random sample of ``samples_per_subject`` voxels per subject (``None``:
    every foreground voxel, in float64: the exact statistics that the federated plan's merge
    of site fingerprints, :mod:`cohortseg.preprocessing.site_fingerprint`, reproduces).
    """
    rng = np.random.default_rng(seed)
    spacings, shapes, samples = [], [], []
    for s in subjects:
        image, affine = load_nifti(s.image, s.subject)
        canon, canon_affine, _ = reorient(image, affine)
        spacings.append(spacing_of(canon_affine).tolist())
        shapes.append(list(canon.shape))
        if s.label:
            label, _ = load_nifti(s.label, s.subject, dtype=np.uint8)
            fg = image[label > 0]
            if fg.size and samples_per_subject is None:
                samples.append(fg.astype(np.float64))
            elif fg.size:
                samples.append(rng.choice(fg, min(fg.size, samples_per_subject)))
    values = np.concatenate(samples) if samples else np.zeros(1, np.float32)
    return {
        "subjects": [s.subject for s in subjects],
        "spacings_mm": spacings,
        "shapes": shapes,
        "intensity": {
            "mean": float(values.mean()),
            "std": float(values.std()),
            "percentile_00_5": float(np.percentile(values, 0.5)),
            "percentile_50_0": float(np.percentile(values, 50)),
            "percentile_99_5": float(np.percentile(values, 99.5)),
        },
    }


def whole_volume_patch_size(
    resampled_shapes: Sequence[Sequence[float]], divisor: Sequence[int]
) -> list[int]:
    """The smallest patch that holds every training volume whole (``plan.patch_size: full``):
    the largest resampled shape per axis (rounded as preprocessing rounds it), rounded up to a
    multiple of ``divisor``."""
    biggest = np.max(np.maximum(1, np.round(np.asarray(resampled_shapes, float))), axis=0)
    return [int(math.ceil(m / d) * d) for m, d in zip(biggest, divisor, strict=True)]


def network_divisor(strides: Sequence[int | Sequence[int]]) -> list[int]:
    """Total downsampling factor per axis of a network with the given strides."""
    div = np.ones(3, int)
    for s in strides:
        div *= np.broadcast_to(np.asarray(s, int), (3,))
    return div.tolist()


def spatial_dims(shapes: Sequence[Sequence[int]], subjects: Sequence[str] = ()) -> int:
    """2 when every image has one slice (canonical shape (X, Y, 1)): the plan is then in-plane,
    3 when none has an axis of one voxel.

    Raises
    ------
    CohortsegError
        For a mix, naming the one-slice ``subjects`` (or those whose slice is not nearest the
        axial plane, which reorients to (1, Y, Z) or (X, 1, Z)).
    """
    if len(shapes) and all(int(shape[2]) == 1 for shape in shapes):
        return 2
    flat = [k for k, shape in enumerate(shapes) if 1 in [int(n) for n in shape]]
    if flat:
        names = [subjects[k] if k < len(subjects) else f"#{k}" for k in flat]
        raise CohortsegError(
            f"one-slice images among volumes, or not nearest the axial plane: {', '.join(names)}"
            "; a cohort is 2D (every training image one slice, its normal nearest S) or 3D: "
            "give these subjects their own cohort, or reslice them"
        )
    return 3


def _network_and_patch(
    config: Mapping,
    chosen: Mapping,
    spacing: Sequence[float],
    resampled: Sequence[Sequence[float]],
    dims: int,
) -> tuple[dict | None, list[int]]:
    """The network (``model.name: auto``; None for other models) and the patch of a plan: the
    chosen configuration's (nnU-Net's), or those for ``plan.patch_size`` (voxels, or
    ``full``); rounded up to a multiple of the network's total stride, except a patch given
    for another model (taken as it is)."""
    user, model = config["plan"], config["model"]
    given = user.get("patch_size")
    if model["name"] == "auto":
        if given == "full":
            given = whole_volume_patch_size(resampled, [1, 1, 1])
        if given:
            flat = [a for a in range(3) if chosen["patch_size"][a] == 1]  # 2D: the slice axis
            given = [1 if a in flat else int(n) for a, n in enumerate(given)]
            network = auto_network(spacing, given)
        else:
            network = unet_topology(
                chosen["strides"], chosen["kernel_size"], chosen["filters"], chosen["patch_size"]
            )
        return network, network.pop("patch_size")
    divisor = network_divisor(model["strides"])
    if given == "full":
        size = whole_volume_patch_size(resampled, divisor)
    elif given:
        size = [int(n) for n in given]
    else:
        size = padded_patch_size(chosen["patch_size"], divisor)
    if dims == 2:  # in-plane: the network's strides along the slice axis are 1 (models)
        size = [*size[:2], 1]
    return None, size


def _batch_size(
    size: Sequence[int],
    spacing: Sequence[float],
    chosen: Mapping,
    n_classes: int,
    budget_gb: float,
    dataset_voxels: float,
) -> int:
    """nnU-Net's batch size for the plan's patch: the chosen configuration's, or for another
    patch (``plan.patch_size``, another model's strides) the one the budget holds beside
    nnU-Net's network for that patch (its memory yardstick, whatever the model)."""
    if list(size) == list(chosen["patch_size"]):
        return int(chosen["batch_size"])
    net = auto_network(spacing, size)
    estimate = feature_map_size(net["patch_size"], net["strides"], net["filters"], n_classes)
    dims = 2 if 1 in size else 3
    return batch_size(estimate, net["patch_size"], budget_gb, dataset_voxels, dims)


def _check_in_plane(name: str, chosen: Mapping, config: Mapping, dims: int) -> None:
    """A 2d configuration of volumes trains on axial slices with the planned network only.

    Raises
    ------
    CohortsegError
        If nnU-Net's slice axis is not z, or the model is not ``auto``.
    """
    if name != "2d" or dims == 2:
        return
    axis = chosen["patch_size"].index(1)
    if axis != 2:
        raise CohortsegError(
            f"plan.configuration: 2d slices this cohort along {'xyz'[axis]} (its coarsest axis,"
            " as nnU-Net does), but cohortseg trains 2D networks on axial (z) slices of volumes"
            " only: use 3d_fullres (or auto)"
        )
    if config["model"]["name"] != "auto":
        raise CohortsegError(
            f"plan.configuration: 2d on volumes needs model.name: auto (the in-plane network),"
            f" not {config['model']['name']}; or use 3d_fullres"
        )


def make_plan(fp: Mapping, config: Mapping) -> dict:
    """Derive the preprocessing plan from a fingerprint by nnU-Net's rules; keys set in
    ``config['plan']`` win.

    nnU-Net's configurations (``2d``, ``3d_fullres``, ``3d_lowres`` where it would plan one:
    :func:`cohortseg.preprocessing.configurations.plan_configurations`, within
    ``plan.memory_budget_gb``) are recorded as ``configurations``; the one cohortseg trains
    (``plan.configuration``; ``auto``: ``3d_fullres``, ``2d`` for one-slice images) as
    ``configuration``, and its grid, patch and batch become the plan's:
    ``target_spacing_mm``, ``median_shape``, ``patch_size`` (voxels) and ``batch_size``
    (nnU-Net's, for the budget). With ``model.name: auto`` also ``network``, the topology that
    configuration planned (:func:`cohortseg.networks.topology.unet_topology`); for other models
    the patch is rounded up to a multiple of their strides. Besides: ``memory_budget_gb``,
    ``normalization``, ``crop``, ``crop_margin``, ``intensity``, ``classes``, ``spatial_dims``
    (:func:`spatial_dims`; with 2 the patch is one slice thick, (X, Y, 1)) and ``hash``
    (sha256 of the rest).

    Raises
    ------
    CohortsegError
        If ``plan.configuration`` is not planned for this cohort, or is ``2d`` where cohortseg
        cannot train it (:func:`_check_in_plane`).
    """
    user = config["plan"]
    dims = spatial_dims(fp["shapes"], fp.get("subjects", ()))
    budget = float(user["memory_budget_gb"])
    configurations = plan_configurations(
        fp["spacings_mm"],
        fp["shapes"],
        len(config["classes"]) + 1,
        budget,
        target_spacing_mm=user.get("target_spacing_mm"),
        max_patch_size=user.get("max_patch_size"),
    )
    name = chosen_configuration(user["configuration"], configurations)
    chosen = configurations[name]
    _check_in_plane(name, chosen, config, dims)
    spacing = chosen["target_spacing_mm"]
    resampled = [  # an axis of one voxel stays one (geometry.resampled_shape)
        [n * s / t if n > 1 else 1.0 for n, s, t in zip(shape, sp, spacing, strict=True)]
        for shape, sp in zip(fp["shapes"], fp["spacings_mm"], strict=True)
    ]
    network, size = _network_and_patch(config, chosen, spacing, resampled, dims)
    median_shape = resampled_median_shape(fp["spacings_mm"], fp["shapes"], spacing)
    dataset_voxels = math.prod(median_shape) * len(fp["shapes"])
    n_classes = len(config["classes"]) + 1
    plan = {
        "target_spacing_mm": [float(x) for x in spacing],
        "median_shape": median_shape,
        "patch_size": [int(x) for x in size],
        "batch_size": _batch_size(size, spacing, chosen, n_classes, budget, dataset_voxels),
        "memory_budget_gb": budget,
        "configuration": name,
        "configurations": configurations,
        "normalization": user.get("normalization") or "zscore",
        "crop": bool(user["crop"]),
        "crop_margin": int(user["crop_margin"]),
        "intensity": dict(fp["intensity"]),
        "classes": list(config["classes"]),
        "spatial_dims": dims,
    }
    if network is not None:  # only then, so that other plans keep their hash
        plan["network"] = network
    plan["hash"] = plan_hash(plan)
    log.info("plan: %s", json.dumps(plan))
    return plan


def plan_hash(plan: Mapping) -> str:
    """Short sha256 of a plan's content (without its own ``hash`` key; ``spatial_dims: 3`` left
    out, so that volume plans made before it was recorded keep their hash, and with it their
    preprocessed files and patch stores)."""
    body = {
        k: v for k, v in plan.items() if k != "hash" and not (k == "spatial_dims" and int(v) == 3)
    }
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:16]
