"""Where every product lives under ``results/``: one function or constant per product; rules,
scripts and tests name files through these (only this package knows the layout)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from cohortseg.core.cohort import Subject, subject_site

INVALID_TABLE = "results/qc/invalid_subjects.tsv"


VALIDATION_OK = "results/qc/validation.ok"


PLAN = "results/plan/plan.json"


FINGERPRINT = "results/plan/fingerprint.json"


#: Where a site's own products live on one machine (at a real site: the site's storage).
SITES_DIR = "results/sites"


TRAIN_CHECKPOINT_DIR = "results/.train_checkpoint"


REVIEW_TABLE = "results/review/review.tsv"


#: The review package's MONAI Label datastore (the images, the predictions in labels/original/).
REVIEW_DATASTORE = "results/review/datastore"


#: Where MONAI Label puts a submitted correction: in the review package, a link to
#: ``corrections.dir`` (reviewers' work lives outside ``results/``, which ``make clean`` and
#: reruns delete; :func:`cohortseg.annotation.review.link_final_labels`).
REVIEW_FINAL_LABELS = f"{REVIEW_DATASTORE}/labels/final"


CONVERTED_DIR = "results/converted"


def converted_paths(subject: str) -> dict[str, str]:
    """The NIfTI files a subject's DICOM image and label (a SEG) are converted to."""
    return {
        "image": f"{CONVERTED_DIR}/{subject}/image.nii.gz",
        "label": f"{CONVERTED_DIR}/{subject}/label.nii.gz",
    }


def convert_manifest_path(shard: str) -> str:
    """The table a conversion shard writes last: subject, image, label, their SHA-256, and the
    problem that stopped a subject's conversion (empty when none)."""
    return f"{CONVERTED_DIR}/{shard}.tsv"


def dicom_seg_path(subject: str) -> str:
    """A subject's segmentation as a DICOM Segmentation object (``outputs.dicom_seg``)."""
    return f"results/dicom_seg/{subject}.dcm"


def dicom_seg_manifest_path(shard: str) -> str:
    """The table a DICOM SEG shard writes last: subject, dicom_seg, source, SHA-256."""
    return f"results/dicom_seg/{shard}.tsv"


def dicom_seg_source_folder(subject: str) -> str:
    """The de-identified copy of the series a pseudonymised SEG references."""
    return f"results/dicom_seg/{subject}/source"


def rtstruct_path(subject: str) -> str:
    """A subject's segmentation as an RT Structure Set (``outputs.rtstruct``)."""
    return f"results/rtstruct/{subject}.dcm"


def rtstruct_manifest_path(shard: str) -> str:
    """The table an RTSTRUCT shard writes last: subject, rtstruct, source, SHA-256."""
    return f"results/rtstruct/{shard}.tsv"


def rtstruct_source_folder(subject: str) -> str:
    """The de-identified copy of the series a pseudonymised RTSTRUCT references."""
    return f"results/rtstruct/{subject}/source"


def segmentation_path(subject: str) -> str:
    """A subject's label map on its native grid."""
    return f"results/segmentations/{subject}.nii.gz"


def inference_manifest_path(shard: str) -> str:
    """The table an inference shard writes last: subject, segmentation, SHA-256."""
    return f"results/inference/{shard}.tsv"


def meshes_manifest_path(shard: str) -> str:
    """The table a mesh shard writes last: subject, class, mesh, SHA-256."""
    return f"results/meshes/{shard}.tsv"


def mesh_paths(subject: str, classes: Sequence[str], fmt: str) -> list[str]:
    """A subject's mesh files, one per class."""
    return [f"results/meshes/{subject}/{c}.{fmt}" for c in classes]


def site_fingerprint_path(site: str) -> str:
    """A site's fingerprint of its training subjects (aggregates only), which the federated
    plan merges."""
    return f"{SITES_DIR}/{site}/fingerprint.json"


#: A site's inputs of its SuperNode (``cohortseg.federated.deployment.prepare_sites``) and the
#: script that starts it (:func:`cohortseg.federated.deployment.supernode_script`), in
#: ``{SITES_DIR}/{site}/federated/``.
SUPERNODE_FILES = ("stores.txt", "val.tsv", "config.json", "plan.json", "supernode.sh")


def supernode_paths(site: str) -> dict[str, str]:
    """A site's SuperNode inputs and start script, by name (:data:`SUPERNODE_FILES`)."""
    return {name: f"{SITES_DIR}/{site}/federated/{name}" for name in SUPERNODE_FILES}


def product_site(subject: Subject, site_shards: bool) -> str | None:
    """The site whose folder (``results/sites/{site}/``) holds a subject's preprocessed files
    and patch store when shards are by site (``training.backend: federated``), else ``None``."""
    return subject_site(subject) if site_shards else None


def site_of_product(path: str | os.PathLike[str]) -> str | None:
    """The site whose folder holds ``path`` (``results/sites/{site}/…``), else ``None``."""
    parts, prefix = Path(path).parts, Path(SITES_DIR).parts
    if parts[: len(prefix)] == prefix and len(parts) > len(prefix) + 1:
        return parts[len(prefix)]
    return None


def preprocessed_paths(subject: str, site: str | None = None) -> dict[str, str]:
    """A labelled subject's image, label and geometry on the plan's grid (under its site's
    folder when ``site`` is given: :func:`product_site`)."""
    root = f"{SITES_DIR}/{site}/preprocessed" if site else "results/preprocessed"
    base = f"{root}/{subject}"
    return {
        "image": f"{base}/image.nii",
        "label": f"{base}/label.nii.gz",
        "geometry": f"{base}/geometry.json",
    }


def patch_store_path(subject: str, site: str | None = None) -> str:
    """A training subject's HDF5 patch store (under its site's folder when ``site`` is given:
    :func:`product_site`)."""
    root = f"{SITES_DIR}/{site}/patches" if site else "results/patches"
    return f"{root}/{subject}.h5"


def preprocessed_manifest_path(shard: str, site: str | None = None) -> str:
    """The table a preprocessing shard writes last: subject, split, image, label, geometry (in
    its site's folder when ``site`` is given: :meth:`WorkflowCohort.shard_site`)."""
    root = f"{SITES_DIR}/{site}/preprocessed" if site else "results/preprocessed"
    return f"{root}/{shard}.tsv"


def patch_manifest_path(shard: str, site: str | None = None) -> str:
    """The table a patch shard writes last: subject, store, SHA-256 (in its site's folder when
    ``site`` is given: :meth:`WorkflowCohort.shard_site`)."""
    root = f"{SITES_DIR}/{site}/patches" if site else "results/patches"
    return f"{root}/{shard}.tsv"


def validation_shard_path(shard: str, site: str | None = None) -> str:
    """A validation shard's problems (TSV; in its site's folder when ``site`` is given:
    :meth:`WorkflowCohort.shard_site`)."""
    root = f"{SITES_DIR}/{site}/qc/validation" if site else "results/qc/validation"
    return f"{root}/{shard}.tsv"


def uncertainty_shard_path(shard: str) -> str:
    """An inference shard's per-subject uncertainty scores (TSV; with maps, their SHA-256)."""
    return f"results/uncertainty/{shard}.tsv"


def uncertainty_map_path(subject: str) -> str:
    """A subject's voxel-wise uncertainty map on its native grid
    (``inference.uncertainty_maps``)."""
    return f"results/uncertainty_maps/{subject}.nii.gz"


def metrics_shard_path(shard: str) -> str:
    """An evaluation shard's metrics (TSV)."""
    return f"results/metrics/{shard}.tsv"


def stats_shard_path(shard: str) -> str:
    """A statistics shard's rows (TSV)."""
    return f"results/stats/{shard}.tsv"


#: What a shard job of each stage writes (its one declared output).
STAGE_OUTPUT = {
    "convert": convert_manifest_path,
    "validate": validation_shard_path,
    "preprocess": preprocessed_manifest_path,
    "patches": patch_manifest_path,
    "infer": inference_manifest_path,
    "evaluate": metrics_shard_path,
    "stats": stats_shard_path,
    "meshes": meshes_manifest_path,
    "dicom_seg": dicom_seg_manifest_path,
    "rtstruct": rtstruct_manifest_path,
}


#: The stages whose shard jobs write into their site's folder when shards are by site
#: (``training.backend: federated``).
SITE_STAGES = ("validate", "preprocess", "patches")
