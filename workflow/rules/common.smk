# Wiring: the cohort, its shards, product paths, resources and rerun markers, all computed by
# cohortseg.workflow (pure functions of the config, unit-tested); this file only binds them to
# this run's config for the rule files.
#
# Every sharded stage (validate, preprocess, patches, infer, evaluate, stats, meshes) is one rule
# with a {shard} wildcard over one partition of the cohort (shard_size subjects, sheet order).
# A job's command line carries the cohort config (COHORT_JSON, a few hundred bytes) and its shard
# id: the script finds its subjects in the sample sheet itself, and leaves out those its
# validation shard found invalid (on_invalid: skip), so nothing on a command line grows with the
# cohort. The members are also the rule's `members` param, so a shard whose members change runs
# again.
import json
import os
import shlex

from cohortseg.core.cohort import is_dicom
from cohortseg.annotation.corrections import corrected_label_path
from cohortseg.core.errors import CohortsegError
from cohortseg.workflow import registry as versions
from cohortseg.preprocessing.patches import check_store
from cohortseg.core.redact import REDACT_ENV
from cohortseg.workflow.paths import (
    INVALID_TABLE,
    PLAN,
    SITE_STAGES,
    VALIDATION_OK,
    convert_manifest_path,
    inference_manifest_path,
    mesh_paths,
    meshes_manifest_path,
    patch_store_path,
    segmentation_path,
    site_fingerprint_path,
)
from cohortseg.workflow.cohort import (
    STAGE_SPLITS,
    plan_subjects,
    plan_subjects_by_site,
    robustness_subjects,
    site_stage_outputs,
    training_sites,
    workflow_cohort,
)
from cohortseg.workflow import markers, paths, resources
from cohortseg.workflow.config import (
    cohort_config,
    is_federated,
    plan_config,
    plan_input,
    training_config,
)

PRIVACY = config["privacy"]
# Apptainer image for --software-deployment-method apptainer (null: no container).
CONTAINER = config["container"]
DEMO = config["samples"] == "demo"
N_CLASSES = len(config["classes"]) + 1
try:
    # Pseudonymised runs name subjects by a keyed hash in every path and table under results/
    # and logs/, and keep input paths out of logs and tables.
    if PRIVACY["pseudonymize"]:
        os.environ[REDACT_ENV] = "1"
    COHORT = workflow_cohort(cohort_config(config))
    # Model versions (results/models/v{N}/): the checkpoint training starts from
    # (training.init_from; None: from scratch) and the one that segments the cohort
    # (model_version; null: the model trained by this run).
    TRAIN_HASH = versions.training_subjects_hash(COHORT.subjects)
    INIT_FROM = versions.resolve_init_from(
        config["training"]["init_from"], TRAIN_HASH, bool(COHORT.corrections)
    )
    INFERENCE_MODEL = versions.inference_checkpoint(config["model_version"])
    # the plan that preprocessing, patches and training follow: at a site of a real federation
    # the coordinator's (federated.plan), else the plan job's
    PLAN_INPUT = plan_input(config)
except CohortsegError as exc:
    raise WorkflowError(f"cohortseg: {exc}") from None

BY_ID = COHORT.by_id
# subject -> corrected label file from review (see corrections.smk)
CORRECTIONS = COHORT.corrections
TRAIN = COHORT.split_ids("train")
VAL = COHORT.split_ids("val")
# the training subjects the plan is made from: when fine-tuning, those of the parent model
PLAN_SUBJECTS = plan_subjects(COHORT, fine_tuning=INIT_FROM is not None)
# training.backend: federated: each site fingerprints its own training subjects and the plan
# job merges those fingerprints (plan.smk); site -> its training subjects the plan is made from
FEDERATED = is_federated(config)
PLAN_SITES = plan_subjects_by_site(COHORT, fine_tuning=INIT_FROM is not None)
SITE_FINGERPRINTS = (
    [site_fingerprint_path(site) for site in PLAN_SITES] if FEDERATED else []
)
# the sites whose SuperNode inputs the `site` target makes (train.smk): those with patch stores
TRAINING_SITES = training_sites(COHORT)
# a shard of a site's stage (SITE_STAGES) writes into its site's folder when federated
SITE = "{site}" if FEDERATED else None
# stage -> {shard id: members of the stage's splits}, shards without any left out
STAGE_SHARDS = {stage: COHORT.stage_shards(stage) for stage in STAGE_SPLITS}


def shards_of(stage):
    """The shard ids of a stage."""
    return list(STAGE_SHARDS[stage])


def members(stage):
    """Input/params function: the member ids of the job's shard in `stage`."""
    return lambda w: STAGE_SHARDS[stage][w.shard]


def as_json(obj):
    """A config section as one shell-quoted JSON argument."""
    return shlex.quote(json.dumps(obj, sort_keys=True))


COHORT_JSON = as_json(cohort_config(config))


wildcard_constraints:
    subject=r"[^/]+",
    shard=r"[0-9]+",
    site=r"[^/]+",


def script(name):
    """Path of a command-line entry point in scripts/."""
    return f"{workflow.basedir}/scripts/{name}"


segmentation = segmentation_path
inference_manifest = inference_manifest_path
meshes_manifest = meshes_manifest_path


def site_outputs(stage):
    """Input function: the outputs of the job's site's shard jobs of a stage."""
    return lambda w: site_stage_outputs(COHORT, stage, w.site)


def stage_outputs(stage):
    """Every shard output of a stage (what a joining rule takes)."""
    return [COHORT.stage_output(stage, shard) for shard in STAGE_SHARDS[stage]]


def meshes_of(subject):
    """A subject's mesh files, one per class."""
    return mesh_paths(subject, config["classes"], config["meshes"]["format"])


def cluster_resources(rule_name):
    """SLURM resources of a rule (cohortseg.workflow.resources.cluster_resources)."""
    return resources.cluster_resources(config["cluster"], config["training"], rule_name)


def train_launcher():
    """Command prefix that starts the training ranks (see training.launcher)."""
    try:
        return resources.train_launcher(config["training"], config["cluster"])
    except CohortsegError as exc:
        raise WorkflowError(f"cohortseg: {exc}") from None


def rule_threads(rule_name):
    """Threads of a rule: its cpus_per_task (locally capped at --cores by Snakemake)."""
    return resources.rule_threads(config["cluster"], rule_name)


def tracked(paths):
    """Input files to track: the demo's, or a real cohort's that exist (see workflow.py)."""
    return markers.tracked(paths, DEMO)


def plan_files(kind):
    """The plan subjects' `kind` files that the plan job opens (none when federated: the
    sites' fingerprints stand for them)."""
    if FEDERATED:
        return []
    return [ancient(p) for p in tracked(getattr(BY_ID[s], kind) for s in PLAN_SUBJECTS)]


def site_plan_files(kind):
    """Input function of `site_fingerprint`: the `kind` files of the site's plan subjects."""
    return lambda w: [
        ancient(p) for p in tracked(getattr(BY_ID[s], kind) for s in PLAN_SITES[w.site])
    ]


def by_site(path):
    """A log or benchmark path of a shard job of a site's stage (SITE_STAGES): with the
    {site} wildcard of its output when federated."""
    return path.replace("{shard}", "{site}/{shard}") if FEDERATED else path


def made_by_rules(paths):
    """The demo cohort's files (a rule makes them); none of a real cohort's."""
    return markers.made_by_rules(paths, DEMO)


def member_files(stage, kind):
    """Input function: the `kind` ("image" or "label") files of the shard's members that
    Snakemake should track, and the shard's conversion manifest where members' files are
    converted from DICOM (it stands for those files: its SHA-256 columns change with them).
    """

    def files(w):
        ids = STAGE_SHARDS[stage][w.shard]
        return tracked(getattr(BY_ID[s], kind) for s in ids) + converted(ids, w.shard)

    return files


def converted(ids, shard):
    """The shard's conversion manifest if any of `ids` has DICOM inputs, else nothing."""
    dicom = any(s in COHORT.dicom for s in ids)
    return [convert_manifest_path(shard)] if dicom else []


def dicom_sources(w):
    """Input function of `convert`: the DICOM inputs (series folders, SEG files) of the
    shard's members that exist or that a rule makes (the demo's), so that a folder whose
    files were replaced or removed (its modification time) converts again."""
    sources = [COHORT.source(s) for s in STAGE_SHARDS["convert"][w.shard]]
    return tracked([p for s in sources for p in (s.image, s.label) if is_dicom(p)])


def incomplete_marker(stage, *columns, table=None):
    """Input function: a marker that makes a finished shard of `stage` run again when a file
    its manifest (or another `table` of the shard, a function of the shard) lists (in
    `columns`; not declared outputs) was deleted."""

    def marker(w):
        manifest = table(w.shard) if table else COHORT.stage_output(stage, w.shard)
        return markers.missing_files_marker(
            manifest, f"{os.path.dirname(manifest)}/.incomplete/{w.shard}", columns
        )

    return marker


def damaged_store_marker(w):
    """`patches`: a shard with a store that fails a cheap integrity check is rebuilt."""
    problems = []
    for s in STAGE_SHARDS["patches"][w.shard]:
        store = patch_store_path(s, COHORT.product_site(s))
        problem = check_store(store) if os.path.exists(store) else None
        if problem:
            problems.append(f"{store}: {problem}\n")
    folder = os.path.dirname(COHORT.stage_output("patches", w.shard))
    return markers.rerun_marker(f"{folder}/.damaged/{w.shard}", "".join(problems))
