"""The cohort as the workflow's jobs see it: pseudonymised, in shards, with the corrections
from review applied, and what each shard job of each stage works on. Pure functions of the
config and the environment; the ``.smk`` files and the scripts only wire them.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path

from cohortseg.annotation.corrections import SUFFIXES, apply_corrections, find_corrections
from cohortseg.core.cohort import (
    SPLITS,
    Subject,
    is_dicom,
    load_cohort,
    resolve_shard_size,
    shard_table,
    subject_site,
)
from cohortseg.core.errors import CohortsegError
from cohortseg.core.io import read_tsv
from cohortseg.core.pseudonyms import load_key, pseudonymize
from cohortseg.inputs.pictures import is_picture
from cohortseg.inputs.validate import read_problems
from cohortseg.workflow.paths import (
    REVIEW_DATASTORE,
    REVIEW_FINAL_LABELS,
    SITE_STAGES,
    STAGE_OUTPUT,
    converted_paths,
    product_site,
)

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
    "rtstruct": None,
}


#: Stages that work only on the subjects with DICOM inputs.
DICOM_STAGES = ("convert", "dicom_seg", "rtstruct")


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
        (:func:`cohortseg.annotation.corrections.corrected_label_path`) and their split may have
        changed.
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

    @cached_property
    def _shard_of(self) -> dict[str, str]:
        return {s: k for k, m in self.shards.items() for s in m}

    def shard_of(self, subject: str) -> str:
        """The shard holding ``subject``."""
        return self._shard_of[subject]

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
        if stage in DICOM_STAGES and not self.dicom:
            return {}
        splits = set(self.stage_splits(stage))
        by_id = self.by_id
        if splits >= set(SPLITS) and stage not in DICOM_STAGES:  # the shards as they are
            return {k: list(m) for k, m in self.shards.items() if m}
        table = {k: [s for s in m if by_id[s].split in splits] for k, m in self.shards.items()}
        if stage in DICOM_STAGES:
            table = {k: [s for s in m if s in self.dicom] for k, m in table.items()}
        if stage in ("dicom_seg", "rtstruct"):  # a PNG or TIFF picture has no series to reference
            table = {
                k: [s for s in m if not is_picture(self.source(s).image)] for k, m in table.items()
            }
        return {k: members for k, members in table.items() if members}


def workflow_cohort(config: Mapping) -> WorkflowCohort:
    """The cohort named by ``config`` (the sections of :func:`cohort_config`), its ids
    pseudonymised where ``privacy.pseudonymize`` says so (key from the environment or
    ``privacy.key_file``), in shards of ``shard_size`` subjects, with the corrections from
    review applied (:mod:`cohortseg.annotation.corrections`; named by the ids used in paths)."""
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


def legacy_corrections(corrections_dir: str | os.PathLike[str] | None) -> list[str]:
    """Reviewers' corrections where MONAI Label put them before they moved out of ``results/``:
    files in the review datastore's ``labels/final/`` when it is a folder of its own, not the
    link to ``corrections_dir`` that the review job makes (``make clean`` would delete them).
    They are still read; the review job moves them into ``corrections_dir`` when it runs."""
    final = Path(REVIEW_FINAL_LABELS)
    if corrections_dir is None or final.is_symlink() or not final.is_dir():
        return []
    return sorted(
        str(p)
        for p in final.iterdir()
        if p.is_file() and not p.name.startswith(".") and p.name.lower().endswith(SUFFIXES)
    )


def _readable(subject: Subject) -> Subject:
    """``subject`` with its DICOM inputs replaced by the NIfTI files ``convert`` makes."""
    if not (is_dicom(subject.image) or is_dicom(subject.label)):
        return subject
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
