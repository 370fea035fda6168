"""The workflow's logic as pure functions of the config and the environment: typing the
config, the cohort as the workflow sees it (pseudonymised, in shards, and what each shard job
of each stage works on), where each product lives, SLURM resources and the training launcher,
and the markers that make an unsound finished job run again. The ``.smk`` files and the
scripts only wire these.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import Any

import yaml

from cohortseg.cohort import SPLITS, Subject, is_dicom, load_cohort, shard_table
from cohortseg.corrections import CORRECTED_LABELS, apply_corrections, find_corrections
from cohortseg.errors import CohortsegError
from cohortseg.federation import DEFAULT_SITE
from cohortseg.io import read_tsv
from cohortseg.pictures import is_picture
from cohortseg.privacy import load_key, pseudonymize
from cohortseg.validate import read_problems

# ------------------------------------------------------------------------------ configuration


def _declared_types(schema: Mapping) -> set[str]:
    """The JSON types a schema names in ``type`` (its own and its ``oneOf``/``anyOf``'s)."""
    t = schema.get("type", [])
    types = {t} if isinstance(t, str) else set(t)
    for sub in [*schema.get("oneOf", []), *schema.get("anyOf", [])]:
        types |= _declared_types(sub)
    return types


def _constrained(schema: Mapping) -> bool:
    """Whether the schema says anything about a value's type or its allowed values."""
    keys = ("type", "enum", "const", "oneOf", "anyOf")
    return any(k in schema for k in keys)


def coerce_to_schema(value: Any, schema: Mapping) -> Any:
    """Parse strings as YAML where the JSON schema expects no string.

    ``snakemake --config inference="{shard_size: 8}"`` passes nested values as strings; this
    turns ``"8"`` into ``8`` where the schema wants an integer, and leaves strings alone where
    it wants a string (a path such as ``samples: 2024.tsv`` stays a path). Mappings are
    coerced in place.
    """
    if isinstance(value, MutableMapping):
        props = schema.get("properties", {})
        extra = schema.get("additionalProperties")
        for key in list(value):
            sub = props.get(key, extra if isinstance(extra, dict) else None)
            if sub is not None:
                value[key] = coerce_to_schema(value[key], sub)
        return value
    if isinstance(value, list) and "items" in schema:
        return [coerce_to_schema(v, schema["items"]) for v in value]
    # a string where the schema admits no free string (only numbers, or named constants
    # such as `auto`) is YAML: "8" becomes 8, "auto" stays "auto"
    if isinstance(value, str) and _constrained(schema) and "string" not in _declared_types(schema):
        try:
            parsed = yaml.safe_load(value)
        except yaml.YAMLError:
            return value
        return coerce_to_schema(parsed, schema) if isinstance(parsed, list | dict) else parsed
    return value


def load_yaml(path: str | os.PathLike[str]) -> dict:
    """Read a YAML file (a config or a JSON schema)."""
    with open(path) as handle:
        return yaml.safe_load(handle)


def load_schema(path: str | os.PathLike[str]) -> dict:
    """Read a YAML JSON-schema file."""
    return load_yaml(path)


# ------------------------------------------------------------------------------ the cohort

#: The splits each sharded stage works on (``None``: the config's ``inference.splits``).
STAGE_SPLITS: dict[str, tuple[str, ...] | None] = {
    "convert": SPLITS,
    "validate": SPLITS,
    "preprocess": ("train", "val"),
    "patches": ("train",),
    "infer": None,
    "evaluate": None,
    "stats": None,
    "meshes": None,
    "dicom_seg": None,
}
#: Stages that work only on the subjects with DICOM inputs.
DICOM_STAGES = ("convert", "dicom_seg")


def auto_shard_size(n_subjects: int) -> int:
    """Subjects per shard for ``shard_size: auto``: the power of two at or above √N.

    About √N shards of about √N subjects: 4 shards for the 16-subject demo, 196 of 256 for
    50,000 subjects. A power of two, so that a growing cohort changes shard membership (and
    reruns its shard jobs) only when it passes 4^k subjects, not with every new subject.
    """
    return _pow2_at_least(math.isqrt(max(n_subjects, 1) - 1) + 1)


def _pow2_at_least(n: int) -> int:
    return 1 << max(0, (n - 1).bit_length())


def resolve_shard_size(setting: int | str, n_subjects: int) -> int:
    """``shard_size`` from the config (a number, or ``auto``: :func:`auto_shard_size`)."""
    if setting == "auto":
        return auto_shard_size(n_subjects)
    size = int(setting)
    if size < 1:
        raise CohortsegError(f"shard_size must be auto or >= 1, got {setting}")
    return size


#: The inference keys that training's validation reads (sliding window on the plan's grid): the
#: others (test-time augmentation, uncertainty maps, workers) only concern inference shards, so
#: changing them must not retrain the model.
TRAINING_INFERENCE_KEYS = ("overlap", "sw_batch_size")


def training_config(config: Mapping) -> dict[str, Any]:
    """The config the training job gets: the ``model`` and ``training`` sections, the
    inference keys its validation reads (:data:`TRAINING_INFERENCE_KEYS`) and, for
    ``training.backend: federated``, the ``federated`` section."""
    inference = {k: config["inference"][k] for k in TRAINING_INFERENCE_KEYS}
    out = {"model": config["model"], "training": config["training"], "inference": inference}
    if config["training"]["backend"] == "federated":
        # not federated.plan: which file holds the plan is the plan input's business
        out["federated"] = {k: v for k, v in config["federated"].items() if k != "plan"}
    return out


def plan_config(config: Mapping) -> dict[str, Any]:
    """The config the plan job gets: the ``plan``, ``model`` and ``classes`` sections and
    ``training.init_from`` as ``init_from``."""
    return {
        **{k: config[k] for k in ("plan", "model", "classes")},
        "init_from": config["training"]["init_from"],
    }


def coordinator_plan_config(defaults: Mapping, overrides: Mapping) -> dict[str, Any]:
    """:func:`plan_config` of a federation's coordinator, which has no sample sheet: the
    workflow's config as the Snakefile makes it from ``defaults`` (``config.yaml``) and
    ``overrides`` (the config file the sites run with), the ``cohort`` preset of a sheet
    under ``training.preset: auto``."""
    from cohortseg.presets import apply_preset, merged

    config = merged(defaults, overrides)
    if config.get("samples", "demo") == "demo":
        config["samples"] = "the sites' sample sheets"  # not the demo: the sheet's preset
    return plan_config(apply_preset(config, defaults))


def cohort_config(config: Mapping) -> dict[str, Any]:
    """The config sections a job needs to rebuild the cohort and its shards itself (the sample
    sheet is the one source of who is in a job): a few hundred bytes, whatever the cohort."""
    return {
        "samples": config["samples"],
        "demo": config["demo"],
        # not privacy.mapping_file: where the mapping goes changes no job's subjects
        "privacy": {k: config["privacy"][k] for k in ("pseudonymize", "key_env", "key_file")},
        "shard_size": config["shard_size"],
        "inference": {"splits": list(config["inference"]["splits"])},
        "validation": {"on_invalid": config["validation"]["on_invalid"]},
        "corrections": dict(config["corrections"]),
        # only when federated, so that other runs' shard jobs keep their params
        **({"site_shards": True} if is_federated(config) else {}),
    }


@dataclass(frozen=True)
class WorkflowCohort:
    """The cohort as the workflow's jobs see it.

    Attributes
    ----------
    sheet_subjects
        The subjects as the sample sheet (or the demo) names them.
    subjects
        The same subjects under the ids used in every path and table (pseudonyms in
        pseudonymised runs), in sheet order.
    shards
        Shard id (``00000``…) → member ids: one partition of every subject in sheet order,
        shared by every sharded stage (validation, preprocessing, patches, inference,
        evaluation, statistics, meshes), so appending subjects only adds or changes the last
        shards.
    inference_splits
        The splits that are segmented.
    dicom
        Ids of the subjects with a DICOM image or label: their ``subjects`` entries name the
        NIfTI files the ``convert`` stage makes (:func:`converted_paths`), and
        :meth:`source` their DICOM inputs.
    corrections
        Subject id → corrected label file from review (``corrections.dir`` and the review
        datastore's ``labels/final/``); those subjects' ``label`` is the checked copy
        (:func:`cohortseg.corrections.corrected_label_path`) and their split may have changed.
    site_shards
        Whether each shard holds one site's subjects only and a site's preprocessed files and
        patch stores go to its own folder (``training.backend: federated``;
        :func:`site_shard_table`, :func:`product_site`).
    """

    sheet_subjects: tuple[Subject, ...]
    subjects: tuple[Subject, ...]
    shards: dict[str, list[str]]
    inference_splits: tuple[str, ...]
    dicom: frozenset[str] = field(default_factory=frozenset)
    corrections: dict[str, str] = field(default_factory=dict)
    site_shards: bool = False

    @cached_property
    def by_id(self) -> dict[str, Subject]:
        return {s.subject: s for s in self.subjects}

    @cached_property
    def _shard_sites(self) -> dict[str, str]:
        return {k: subject_site(self.by_id[m[0]]) for k, m in self.shards.items() if m}

    def shard_site(self, shard: str) -> str | None:
        """The site a shard's subjects are all of when shards are by site, else ``None``."""
        return self._shard_sites.get(shard) if self.site_shards else None

    def stage_output(self, stage: str, shard: str) -> str:
        """What a shard job of ``stage`` writes (:data:`STAGE_OUTPUT`; the stages of
        :data:`SITE_STAGES` into the shard's site folder when shards are by site)."""
        if stage in SITE_STAGES:
            return STAGE_OUTPUT[stage](shard, self.shard_site(shard))
        return STAGE_OUTPUT[stage](shard)

    def product_site(self, subject: str) -> str | None:
        """The site whose folder holds the subject's preprocessed files and patch store, or
        ``None``: the cohort's shared folders (see :func:`product_site`)."""
        return product_site(self.by_id[subject], self.site_shards)

    @cached_property
    def _sources(self) -> dict[str, Subject]:
        return {s.subject: src for s, src in zip(self.subjects, self.sheet_subjects, strict=True)}

    def source(self, subject: str) -> Subject:
        """The subject as the sample sheet gives it (its input files, DICOM or NIfTI)."""
        return self._sources[subject]

    def split_ids(self, split: str) -> list[str]:
        """Ids of the ``split`` subjects, in sheet order."""
        return [s.subject for s in self.subjects if s.split == split]

    def stage_splits(self, stage: str) -> tuple[str, ...]:
        """The splits that ``stage`` (a key of :data:`STAGE_SPLITS`) works on."""
        splits = STAGE_SPLITS[stage]
        return self.inference_splits if splits is None else splits

    def stage_shards(self, stage: str) -> dict[str, list[str]]:
        """Shard id → the members ``stage`` works on, for shards that have any."""
        splits = set(self.stage_splits(stage))
        by_id = self.by_id
        table = {k: [s for s in m if by_id[s].split in splits] for k, m in self.shards.items()}
        if stage in DICOM_STAGES:
            table = {k: [s for s in m if s in self.dicom] for k, m in table.items()}
        if stage == "dicom_seg":  # a PNG or TIFF picture has no series for a SEG to reference
            table = {
                k: [s for s in m if not is_picture(self.source(s).image)] for k, m in table.items()
            }
        return {k: members for k, members in table.items() if members}


def workflow_cohort(config: Mapping) -> WorkflowCohort:
    """The cohort named by ``config`` (the sections of :func:`cohort_config`), its ids
    pseudonymised where ``privacy.pseudonymize`` says so (key from the environment or
    ``privacy.key_file``), in shards of ``shard_size`` subjects, with the corrections from
    review applied (:mod:`cohortseg.corrections`; named by the ids used in paths)."""
    sheet = load_cohort(config)
    privacy = config["privacy"]
    subjects = pseudonymize(sheet, load_key(privacy)) if privacy["pseudonymize"] else sheet
    corrections = find_corrections(config["corrections"]["dir"], REVIEW_DATASTORE)
    subjects = apply_corrections(subjects, corrections, config["corrections"]["split"])
    size = resolve_shard_size(config["shard_size"], len(subjects))
    site_shards = bool(config.get("site_shards"))
    return WorkflowCohort(
        sheet_subjects=tuple(sheet),
        subjects=tuple(_readable(s) for s in subjects),
        shards=site_shard_table(subjects, size)
        if site_shards
        else shard_table([s.subject for s in subjects], size),
        inference_splits=tuple(config["inference"]["splits"]),
        dicom=frozenset(s.subject for s in subjects if is_dicom(s.image) or is_dicom(s.label)),
        corrections=corrections,
        site_shards=site_shards,
    )


def site_shard_table(subjects: Sequence[Subject], shard_size: int) -> dict[str, list[str]]:
    """Shards that each hold one site's subjects, so that a shard job is a job of that site:
    each site's subjects (sheet order) in shards of ``shard_size``, sites in sorted order,
    shard ids numbered on from one site to the next (``00000``…)."""
    by_site: dict[str, list[str]] = {}
    for s in subjects:
        by_site.setdefault(subject_site(s), []).append(s.subject)
    groups = [
        g for site in sorted(by_site) for g in shard_table(by_site[site], shard_size).values()
    ]
    width = max(5, len(str(len(groups))))
    return {f"{k:0{width}d}": g for k, g in enumerate(groups)}


def _readable(subject: Subject) -> Subject:
    """``subject`` with its DICOM inputs replaced by the NIfTI files ``convert`` makes."""
    converted = converted_paths(subject.subject)
    return replace(
        subject,
        image=converted["image"] if is_dicom(subject.image) else subject.image,
        label=converted["label"] if is_dicom(subject.label) else subject.label,
    )


def plan_subjects(cohort: WorkflowCohort, fine_tuning: bool) -> list[str]:
    """Ids of the training subjects the plan is made from: all of them, or, when fine-tuning
    (the parent's plan is kept), those that are not corrections from review."""
    return [s for s in cohort.split_ids("train") if not (fine_tuning and s in cohort.corrections)]


def plan_input(config: Mapping) -> str:
    """The plan that preprocessing, patches and training follow: the coordinator's plan file
    at a site of a real federation (``federated.plan``), else the plan job's :data:`PLAN`.

    Raises ``CohortsegError`` when ``federated.plan`` is set without ``training.backend:
    federated`` or names no file."""
    path = config["federated"].get("plan")
    if not path:
        return PLAN
    if not is_federated(config):
        raise CohortsegError(
            f"federated.plan ({path}) is the coordinator's plan of a federation: set"
            " training.backend: federated too"
        )
    if not os.path.isfile(path):
        raise CohortsegError(
            f"federated.plan: no file {path}; give the plan.json the coordinator sent"
            " (relative paths are from the working directory)"
        )
    return str(path)


def is_federated(config: Mapping) -> bool:
    """Whether the run trains federated (``training.backend: federated``): then the plan is
    merged from the sites' fingerprints (:mod:`cohortseg.sitefingerprint`) and no job of the
    coordinator opens an image to make it."""
    return config["training"]["backend"] == "federated"


def subject_site(subject: Subject) -> str:
    """The site holding a subject's data (the sheet's ``site`` column, else ``local``)."""
    return subject.site or DEFAULT_SITE


def plan_subjects_by_site(cohort: WorkflowCohort, fine_tuning: bool) -> dict[str, list[str]]:
    """Site → ids of its training subjects the plan is made from (:func:`plan_subjects`),
    sites in sorted order; a site without any is left out (it has no fingerprint job)."""
    by_site: dict[str, list[str]] = {}
    for s in plan_subjects(cohort, fine_tuning):
        by_site.setdefault(subject_site(cohort.by_id[s]), []).append(s)
    return dict(sorted(by_site.items()))


def excluded_subjects(problems_table: str | os.PathLike[str], on_invalid: str) -> set[str]:
    """Ids that validation found invalid in ``problems_table`` (a shard's or the cohort's),
    to be left out under ``on_invalid: skip``; none under ``fail`` (the gate stops the run)."""
    if on_invalid != "skip" or not os.path.exists(problems_table):
        return set()
    return {p.subject for p in read_problems(problems_table)}


def skipped_counts(cohort: WorkflowCohort, invalid: Iterable[str]) -> dict[str, int]:
    """Subjects of the cohort that are not segmented, by reason."""
    out, splits = set(invalid), set(cohort.inference_splits)
    return {
        "split not in inference.splits": sum(s.split not in splits for s in cohort.subjects),
        "invalid (validation.on_invalid: skip)": sum(
            s.split in splits and s.subject in out for s in cohort.subjects
        ),
    }


def robustness_subjects(
    cohort: WorkflowCohort, n: int, exclude: Iterable[str] = ()
) -> list[Subject]:
    """The subjects the robustness plot perturbs: the first ``n`` test subjects with a label, in
    sheet order, leaving out those in ``exclude`` (invalid ones under ``on_invalid: skip``)."""
    left_out = set(exclude)
    chosen = [
        s for s in cohort.subjects if s.split == "test" and s.label and s.subject not in left_out
    ]
    return chosen[:n]


def job_subjects(cohort: WorkflowCohort, stage: str, shard: str, on_invalid: str) -> list[Subject]:
    """The subjects a shard job of ``stage`` works on: the shard's members of the stage's
    splits, less those its validation shard found invalid (``on_invalid: skip``).

    Raises ``CohortsegError`` for a shard the cohort does not have."""
    if shard not in cohort.shards:
        raise CohortsegError(f"shard {shard} is not a shard of this cohort ({len(cohort.shards)})")
    members = cohort.stage_shards(stage).get(shard, [])
    invalid = (
        excluded_subjects(cohort.stage_output("validate", shard), on_invalid)
        if stage not in ("convert", "validate")
        else set()
    )
    by_id = cohort.by_id
    return [by_id[s] for s in members if s not in invalid]


# ------------------------------------------------------------------------------ product paths
# One function per product: rules, scripts and tests name files through these.

INVALID_TABLE = "results/qc/invalid_subjects.tsv"
VALIDATION_OK = "results/qc/validation.ok"
PLAN = "results/plan/plan.json"
FINGERPRINT = "results/plan/fingerprint.json"
#: Where a site's own products live on one machine (at a real site: the site's storage).
SITES_DIR = "results/sites"
TRAIN_CHECKPOINT_DIR = "results/.train_checkpoint"
REVIEW_TABLE = "results/review/review.tsv"
#: The review package's MONAI Label datastore: corrections submitted to its labels/final/.
REVIEW_DATASTORE = "results/review/datastore"


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
    """The table a DICOM SEG shard writes last: subject, dicom_seg, SHA-256."""
    return f"results/dicom_seg/{shard}.tsv"


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


#: A site's inputs of its SuperNode (``cohortseg.federation.prepare_sites``) and the script that
#: starts it (:func:`cohortseg.federation.supernode_script`), in ``{SITES_DIR}/{site}/federated/``.
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
}
#: The stages whose shard jobs write into their site's folder when shards are by site
#: (``training.backend: federated``).
SITE_STAGES = ("validate", "preprocess", "patches")


def stage_outputs(config_or_cohort: Mapping | WorkflowCohort, stage: str) -> list[str]:
    """The outputs of every shard job of ``stage``, in shard order (what a rule that joins
    them reads; it finds them itself, so its command line does not grow with the cohort)."""
    cohort = (
        config_or_cohort
        if isinstance(config_or_cohort, WorkflowCohort)
        else workflow_cohort(config_or_cohort)
    )
    return [cohort.stage_output(stage, shard) for shard in cohort.stage_shards(stage)]


def site_stage_outputs(cohort: WorkflowCohort, stage: str, site: str) -> list[str]:
    """The outputs of the shard jobs of ``stage`` that are jobs of ``site`` (shards by site:
    ``training.backend: federated``), in shard order."""
    return [
        cohort.stage_output(stage, shard)
        for shard in cohort.stage_shards(stage)
        if cohort.shard_site(shard) == site
    ]


def training_sites(cohort: WorkflowCohort) -> list[str]:
    """The sites with training subjects (a patch shard) when shards are by site
    (``training.backend: federated``), sorted; none otherwise."""
    shards = cohort.stage_shards("patches")
    return sorted({cohort.shard_site(k) for k in shards} - {None})


def training_inputs(
    config_or_cohort: Mapping | WorkflowCohort, site: str | None = None
) -> tuple[list[str], list[Subject]]:
    """What training reads, from the shard manifests (which list what was actually made, so
    invalid subjects left out under ``on_invalid: skip`` are not there): the patch stores, and
    the preprocessed validation subjects (``image``, ``label`` on the plan's grid); with
    ``site``, that site's only (:func:`site_stage_outputs`)."""
    cohort = (
        config_or_cohort
        if isinstance(config_or_cohort, WorkflowCohort)
        else workflow_cohort(config_or_cohort)
    )

    def manifests(stage: str) -> list[str]:
        if site is None:
            return stage_outputs(cohort, stage)
        return site_stage_outputs(cohort, stage, site)

    stores = [r["store"] for path in manifests("patches") for r in read_tsv(path)]
    val = [
        Subject(r["subject"], r["image"], r["label"], r["split"])
        for path in manifests("preprocess")
        for r in read_tsv(path)
        if r["split"] == "val"
    ]
    return stores, val


def read_subjects(manifest: str | os.PathLike[str]) -> list[Subject]:
    """The subjects (``subject``, ``image``, ``label``, ``split``) a manifest lists."""
    return [
        Subject(r["subject"], r["image"], r.get("label") or None, r["split"])
        for r in read_tsv(manifest)
    ]


# ------------------------------------------------------------------------------ SLURM resources


def rule_spec(cluster: Mapping, rule: str) -> dict[str, Any]:
    """``cluster.rules.default`` overlaid with ``cluster.rules[rule]``."""
    return {**cluster["rules"]["default"], **cluster["rules"].get(rule, {})}


def rule_threads(cluster: Mapping, rule: str) -> int:
    """Threads of a rule: its ``cpus_per_task`` (locally capped at ``--cores`` by Snakemake)."""
    return int(rule_spec(cluster, rule)["cpus_per_task"])


def train_tasks(cluster: Mapping) -> int:
    """Ranks of the training job on a cluster: one per GPU, else ``cluster.rules.train.tasks``."""
    spec = rule_spec(cluster, "train")
    return int(spec.get("gpus", 0)) or int(spec.get("tasks", 1))


def cluster_resources(
    cluster: Mapping, training: Mapping, rule: str, environ: Mapping[str, str] = os.environ
) -> dict[str, Any]:
    """SLURM resources of ``rule`` in the executor plugin's names (``slurm_partition``,
    ``slurm_account``, ``gpu``, ``gpu_model``, ``tasks_per_gpu``, ``mem_mb``, ``runtime``,
    ``cpus_per_task``, ``tasks``, ``mpi``).

    GPU rules go to the GPU partition with one task per GPU; an unset partition or account
    falls back to ``$COHORTSEG_(GPU_)PARTITION`` and ``$COHORTSEG_ACCOUNT``, else to the
    cluster's defaults. A multi-rank ``train`` under ``launcher: srun`` gets ``mpi: srun`` so
    that the job step does not wrap the rule's own ``srun`` in another one.
    """
    spec = rule_spec(cluster, rule)
    gpus = int(spec.pop("gpus", 0))
    partition = cluster["partition"] or environ.get("COHORTSEG_PARTITION")
    if gpus:
        partition = cluster["gpu_partition"] or environ.get("COHORTSEG_GPU_PARTITION") or partition
        spec.update(gpu=gpus, tasks_per_gpu=1)
        spec.pop("tasks", None)
        if cluster["gpu_model"]:
            spec["gpu_model"] = cluster["gpu_model"]
    if rule == "train" and training["launcher"] == "srun" and train_tasks(cluster) > 1:
        spec.update(mpi="srun", tasks=train_tasks(cluster))
    account = cluster["account"] or environ.get("COHORTSEG_ACCOUNT")
    if partition:
        spec["slurm_partition"] = partition
    if account:
        spec["slurm_account"] = account
    return spec


def train_launcher(training: Mapping, cluster: Mapping) -> str:
    """The command prefix that starts the training ranks (``training.launcher``): empty for
    one process, ``torchrun``/``horovodrun`` with ``training.ranks`` local processes, or
    ``srun --ntasks N`` for the N tasks of a SLURM allocation (the job step hides the
    allocation's task count from nested steps, so it is said)."""
    ranks = int(training["ranks"])
    launcher = training["launcher"]
    if training["backend"] == "federated" and launcher != "none":
        raise CohortsegError(
            "training.backend: federated starts its own Flower processes: use launcher: none"
        )
    if launcher == "torchrun":
        return f"torchrun --standalone --nproc-per-node {ranks}"
    if launcher == "horovodrun":
        return f"horovodrun --gloo -np {ranks} -H localhost:{ranks}"
    if launcher == "srun":
        tasks = train_tasks(cluster)
        if tasks < 2:
            return ""  # one task: the job step itself is the only rank
        if training["backend"] == "horovod":
            raise CohortsegError(
                "training.launcher: srun needs training.backend: ddp (Horovod without MPI"
                " cannot rendezvous under srun; use launcher: horovodrun on one node)"
            )
        return f"srun --ntasks {tasks}"
    return ""


# ------------------------------------------------------------------------------ input tracking


def tracked(paths: Iterable[str | None], demo: bool) -> list[str]:
    """The input files Snakemake should track: all of them for the demo cohort (a rule makes
    them), else those that exist, so that a missing file reaches the validator, which reports
    it with the subject, instead of stopping the whole DAG. Files that ``convert`` makes from
    DICOM are not among them: its shard's manifest stands for them."""
    present = [p for p in paths if p and not p.startswith(f"{CONVERTED_DIR}/")]
    return present if demo else [p for p in present if os.path.exists(p) or made_by_rule(p)]


def made_by_rule(path: str) -> bool:
    """Whether a rule makes ``path`` in any cohort: a checked correction from review."""
    return path.startswith(f"{CORRECTED_LABELS}/")


def made_by_rules(paths: Iterable[str | None], demo: bool) -> list[str]:
    """Those of ``paths`` that a rule makes (the demo cohort's files), for rules that read
    input files without needing Snakemake to track them."""
    present = [p for p in paths if p and not p.startswith(f"{CONVERTED_DIR}/")]
    return [p for p in present if demo or made_by_rule(p)]


# ------------------------------------------------------------------------------ rerun markers


def rerun_marker(marker: str | os.PathLike[str], reason: str) -> list[str]:
    """An extra input that makes a job run again when its output is there but not sound.

    With a ``reason`` (text), ``marker`` is written with it, newer than the job's output, so
    Snakemake sees the job as outdated. Once written, the marker stays an input (older than the
    new output), so the set of inputs does not change again. Returns ``[marker]`` if it exists,
    else []. Markers are written while the DAG is built, so a dry run writes them too.
    """
    path = Path(marker)
    if reason:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(reason)
    return [str(path)] if path.exists() else []


def missing_files_marker(
    manifest: str | os.PathLike[str], marker: str | os.PathLike[str], columns: Sequence[str]
) -> list[str]:
    """:func:`rerun_marker` for a shard job whose per-subject files are not declared outputs
    (its manifest is, so that every shard is a job of one rule): when ``manifest`` exists but a
    file it lists in one of ``columns`` does not, the marker lists the missing files and the
    shard runs again. The manifest, not the cohort, says what the job wrote: a subject that it
    left out (invalid, ``on_invalid: skip``) is not missing."""
    missing = []
    if os.path.exists(manifest):
        rows = read_tsv(manifest)
        missing = [r[c] for r in rows for c in columns if r.get(c) and not os.path.exists(r[c])]
    return rerun_marker(marker, "".join(f"{path}\n" for path in missing))
