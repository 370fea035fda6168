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
from cohortseg.networks.topology import auto_network

log = logging.getLogger(__name__)


ANISOTROPY_RATIO = 3.0


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


def target_spacing(spacings_mm: Sequence[Sequence[float]]) -> list[float]:
    """Median spacing per axis; for strongly anisotropic data (ratio > 3) the coarse axis takes
    the 10th percentile instead, so that it is not resampled too coarsely (as nnU-Net does)."""
    arr = np.asarray(spacings_mm, float)
    target = np.median(arr, axis=0)
    coarse = int(np.argmax(target))
    if target[coarse] > ANISOTROPY_RATIO * np.min(target):
        target[coarse] = np.percentile(arr[:, coarse], 10)
    return [float(round(t, 4)) for t in target]


def patch_size(
    median_shape: Sequence[float], max_patch_size: Sequence[int], divisor: Sequence[int]
) -> list[int]:
    """Largest patch not above the median resampled shape nor ``max_patch_size``, rounded down
    to a multiple of ``divisor`` (the network's total downsampling per axis)."""
    out = []
    for m, cap, d in zip(median_shape, max_patch_size, divisor, strict=True):
        size = int(min(m, cap)) // d * d
        out.append(max(size, d))
    return out


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


def unrounded_patch_size(
    user: Mapping, resampled_shapes: Sequence[Sequence[float]], median_shape: Sequence[float]
) -> list[int]:
    """The patch a network is configured for (``model.name: auto``), before rounding to its
    strides: ``plan.patch_size`` if given, the largest resampled volume for ``full``, else
    the median resampled shape capped by ``plan.max_patch_size`` (voxels)."""
    if user.get("patch_size") == "full":
        return whole_volume_patch_size(resampled_shapes, [1, 1, 1])
    if user.get("patch_size"):
        return [int(x) for x in user["patch_size"]]
    return patch_size(median_shape, user["max_patch_size"], [1, 1, 1])


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


def make_plan(fp: Mapping, config: Mapping) -> dict:
    """Derive the preprocessing plan from a fingerprint; keys set in ``config['plan']`` win.

    The plan holds ``target_spacing_mm``, ``patch_size``, ``normalization``, ``crop``,
    ``crop_margin``, ``intensity``, ``classes``, ``spatial_dims`` (:func:`spatial_dims`; with
    2 the patch is one slice thick, (X, Y, 1)) and ``hash`` (sha256 of the rest); with
    ``model.name: auto`` also ``network``, the topology configured from the target spacing and
    the patch (:func:`cohortseg.networks.topology.auto_network`), the patch then rounded up to a
    multiple of its strides.
    """
    user = config["plan"]
    spacing = user.get("target_spacing_mm") or target_spacing(fp["spacings_mm"])
    resampled = [  # an axis of one voxel stays one (geometry.resampled_shape)
        [n * s / t if n > 1 else 1.0 for n, s, t in zip(shape, sp, spacing, strict=True)]
        for shape, sp in zip(fp["shapes"], fp["spacings_mm"], strict=True)
    ]
    median_shape = np.median(np.asarray(resampled), axis=0).tolist()
    dims = spatial_dims(fp["shapes"], fp.get("subjects", ()))
    network = None
    if config["model"]["name"] == "auto":
        unrounded = unrounded_patch_size(user, resampled, median_shape)
        network = auto_network(spacing, unrounded if dims == 3 else [*unrounded[:2], 1])
        size = network.pop("patch_size")
    elif user.get("patch_size") == "full":
        size = whole_volume_patch_size(resampled, network_divisor(config["model"]["strides"]))
    else:
        divisor = network_divisor(config["model"]["strides"])
        size = user.get("patch_size") or patch_size(median_shape, user["max_patch_size"], divisor)
    if dims == 2:  # in-plane: the network's strides along the slice axis are 1 (models)
        size = [*size[:2], 1]
    plan = {
        "target_spacing_mm": [float(x) for x in spacing],
        "median_shape": [round(x, 1) for x in median_shape],
        "patch_size": [int(x) for x in size],
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
