# Wiring: the cohort, its shards, product paths, resources, rerun markers and the model in use,
# all computed by cohortseg.workflow (pure functions of the config, unit-tested); this file only
# binds them to this run's config for the rule files, and holds the rules' input functions.
#
# Every sharded stage (validate, preprocess, patches, infer, evaluate, stats, meshes) is one rule
# with a {shard} wildcard over one partition of the cohort (shard_size subjects, sheet order).
# A job's command line carries the cohort config (COHORT_JSON, a few hundred bytes) and its shard
# id: the script finds its subjects in the sample sheet itself, and leaves out those its
# validation shard found invalid (on_invalid: skip), so nothing on a command line grows with the
# cohort. The members are also the rule's `members` param, so a shard whose members change runs
# again.
#
# Parsing this file and planning the DAG write nothing and import no torch or h5py: a dry run
# leaves the working directory as it was (tests/workflow/test_dry_run.py).
import json
import os
import shlex

from snakemake.logging import logger
from snakemake.utils import validate

from cohortseg.core.cohort import is_dicom, sheet_row_kinds
from cohortseg.annotation.corrections import corrected_label_path
from cohortseg.core.errors import CohortsegError
from cohortseg.workflow import registry as versions
from cohortseg.core.redact import REDACT_ENV
from cohortseg.workflow.paths import (
    INVALID_TABLE,
    PLAN,
    REVIEW_FINAL_LABELS,
    SITE_STAGES,
    VALIDATION_OK,
    convert_manifest_path,
    inference_manifest_path,
    mesh_paths,
    meshes_manifest_path,
    segmentation_path,
    site_fingerprint_path,
)
from cohortseg.workflow.cohort import (
    STAGE_SPLITS,
    legacy_corrections,
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
DEMO = config["samples"] == "demo"
N_CLASSES = len(config["classes"]) + 1
try:
    # Pseudonymised runs name subjects by a keyed hash in every path and table under results/
    # and logs/, and keep input paths out of logs and tables.
    if PRIVACY["pseudonymize"]:
        os.environ[REDACT_ENV] = "1"
    COHORT = workflow_cohort(cohort_config(config))
    # Model versions (results/models/v{N}/): the checkpoint training starts from
    # (training.init_from; None: from scratch) and the model in use: the one that segments the
    # cohort and that every later product (calibration, robustness, explanations, DICOM SEG,
    # the run page) is made with or names (model_version; null: the model trained by this run).
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

# The sample sheet as read (cohortseg.core.cohort.read_sample_sheet has checked every row and
# names the line and subject of a problem): one row of each kind against its schema.
for row in sheet_row_kinds(COHORT.sheet_subjects):
    validate(row, "../schemas/samples.schema.yaml", set_default=False)

BY_ID = COHORT.by_id
# subject -> corrected label file from review (see corrections.smk)
CORRECTIONS = COHORT.corrections
for old in legacy_corrections(config["corrections"]["dir"]):
    logger.warning(
        f"cohortseg: {old} is a reviewer's correction under results/, which `make clean` "
        f"deletes: move it to corrections.dir ({config['corrections']['dir']}); the review "
        "job moves it there when it next runs"
    )
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


def as_json(obj):
    """A config section as one shell-quoted JSON argument."""
    return shlex.quote(json.dumps(obj, sort_keys=True))


COHORT_JSON = as_json(cohort_config(config))


wildcard_constraints:
    subject=r"[^/]+",
    shard=r"[0-9]+",
    site=r"[^/]+",


def command(name, args, prefix=""):
    """The one shell command of a rule: ``[prefix] python scripts/NAME ARGS > {log} 2>&1``.
    Every rule runs one command-line entry point of scripts/ (argparse, one library call) and
    sends what it prints, errors included, to the rule's log."""
    script = shlex.quote(f"{workflow.basedir}/scripts/{name}")
    script = script.replace("{", "{{").replace("}", "}}")
    return f"{prefix}python {script} {args} > {{log}} 2>&1"


segmentation = segmentation_path
inference_manifest = inference_manifest_path
meshes_manifest = meshes_manifest_path


def get_final_output():
    """What the default target `all` makes: the metrics and statistics, the report, the
    review package, the model versions, every inference shard's manifest (it stands for the
    shard's segmentations) and the optional products the config asks for (meshes.smk,
    privacy.smk and convert.smk define them: meshes, the pseudonym mapping, DICOM SEG,
    RTSTRUCT).
    """
    return [
        "results/metrics.tsv",
        "results/summary.json",
        "results/model/learning_curve.png",
        "results/stats.tsv",
        "results/stats_summary.json",
        "results/qc/montages",
        "results/report/run.html",
        paths.REVIEW_TABLE,
        versions.VERSIONS_TABLE,
        *MESHES,
        *MAPPING_TARGETS,
        *DICOM_SEGS,
        *RTSTRUCTS,
        *stage_outputs("infer"),
    ]


def output_folder(w, output):
    """Params function: the folder of the job's first output."""
    return os.path.dirname(output[0])


def input_folder(w, input):
    """Params function: the folder of the job's first input."""
    return os.path.dirname(input[0])


def shards_of(stage):
    """The shard ids of a stage."""
    return list(STAGE_SHARDS[stage])


def members(stage):
    """Params function: the member ids of the job's shard in `stage`."""

    def shard_members(w):
        return STAGE_SHARDS[stage][w.shard]

    return shard_members


def site_outputs(stage):
    """Input function: the outputs of the job's site's shard jobs of a stage."""

    def outputs_of_site(w):
        return site_stage_outputs(COHORT, stage, w.site)

    return outputs_of_site


def stage_outputs(stage):
    """Every shard output of a stage (what a joining rule takes)."""
    return [COHORT.stage_output(stage, shard) for shard in STAGE_SHARDS[stage]]


def val_manifests():
    """The preprocessing manifests of the shards holding validation subjects (training's and
    the calibration's validation split)."""
    return [
        COHORT.stage_output("preprocess", shard)
        for shard, ids in STAGE_SHARDS["preprocess"].items()
        if any(BY_ID[s].split == "val" for s in ids)
    ]


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


def made_by_rules(paths):
    """The demo cohort's files and checked corrections (a rule makes them); none of a real
    cohort's own files."""
    return markers.made_by_rules(paths, DEMO)


def plan_files(kind):
    """The plan subjects' `kind` files that a rule makes (the plan job opens them; none when
    federated: the sites' fingerprints stand for them). ancient(): see plan.smk."""
    if FEDERATED:
        return []
    return [
        ancient(p)
        for p in made_by_rules(getattr(BY_ID[s], kind) for s in PLAN_SUBJECTS)
    ]


def site_plan_files(kind):
    """Input function of `site_fingerprint`: the `kind` files of the site's plan subjects that
    a rule makes."""

    def files_of_site(w):
        ids = PLAN_SITES[w.site]
        return [ancient(p) for p in made_by_rules(getattr(BY_ID[s], kind) for s in ids)]

    return files_of_site


def site_plan_members(w):
    """Params function of `site_fingerprint`: the site's plan subjects."""
    return PLAN_SITES[w.site]


def by_site(path):
    """A log or benchmark path of a shard job of a site's stage (SITE_STAGES): with the
    {site} wildcard of its output when federated."""
    return path.replace("{shard}", "{site}/{shard}") if FEDERATED else path


def member_files(stage, *kinds):
    """Input function: the `kinds` ("image", "label") files of the shard's members that a rule
    makes (the demo's, checked corrections), and the shard's conversion manifest where members'
    files are converted from DICOM (it stands for those files: its SHA-256 columns change with
    them). A real cohort's own files are stood for by `member_digest`."""

    def files(w):
        ids = STAGE_SHARDS[stage][w.shard]
        own = made_by_rules(getattr(BY_ID[s], kind) for s in ids for kind in kinds)
        return own + converted(ids, w.shard)

    return files


def member_digest(stage, *kinds):
    """Params function: what stands for the shard's members' own `kinds` files (a real
    cohort's, made by no rule): a digest of their paths, sizes and modification times,
    so that a replaced or edited file reruns its shard (markers.files_digest)."""

    def digest(w):
        ids = STAGE_SHARDS[stage][w.shard]
        return markers.files_digest(
            (getattr(BY_ID[s], kind) for s in ids for kind in kinds), DEMO
        )

    return digest


def converted(ids, shard):
    """The shard's conversion manifest if any of `ids` has DICOM inputs, else nothing."""
    dicom = any(s in COHORT.dicom for s in ids)
    return [convert_manifest_path(shard)] if dicom else []


def dicom_source_paths(shard):
    """The DICOM inputs (series folders, SEG files) of a conversion shard's members."""
    sources = [COHORT.source(s) for s in STAGE_SHARDS["convert"][shard]]
    return [p for s in sources for p in (s.image, s.label) if is_dicom(p)]


def dicom_sources(w):
    """Input function of `convert` and `dicom_seg`: the DICOM inputs of the shard's members
    that a rule makes (the demo's)."""
    return made_by_rules(dicom_source_paths(w.shard))


def dicom_digest(w):
    """Params function of `convert`: what stands for a real cohort's DICOM inputs (their
    paths, sizes and modification times: a folder whose files were replaced or removed
    converts again)."""
    return markers.files_digest(dicom_source_paths(w.shard), DEMO)


def validation_shard(w):
    """Input function: the job's validation shard (its verdicts: invalid subjects are left
    out under on_invalid: skip)."""
    return COHORT.stage_output("validate", w.shard)


def validate_files(kind):
    """Input function of `validate`: the shard's `kind` files that rules make, as ancient()
    inputs (validate.smk says why). Validation opens a real cohort's files itself (a missing one is a reported
    problem), so those are not inputs here."""

    def files(w):
        ids = STAGE_SHARDS["validate"][w.shard]
        return [ancient(p) for p in made_by_rules(getattr(BY_ID[s], kind) for s in ids)]

    return files


def validate_converted(w):
    """Input function of `validate`: the shard's conversion manifest, if it has DICOM inputs."""
    return converted(STAGE_SHARDS["validate"][w.shard], w.shard)


def correction_of(w):
    """Input function of `correct_label`: the reviewer's correction of the subject."""
    return CORRECTIONS[w.subject]


def image_of(w):
    """Params function: the subject's image (as the jobs read it)."""
    return BY_ID[w.subject].image


def tracked_image_of(w):
    """Input function of `correct_label`: the subject's image, where it exists or a rule
    makes it (a correction is checked again when its image is replaced), and, for a DICOM
    subject, its shard's conversion manifest (the image it is checked against is converted).
    """
    image = tracked([BY_ID[w.subject].image])
    return image + converted([w.subject], COHORT.shard_of(w.subject))


# marker path -> the unsound files that make its shard run again (filled while the DAG is built,
# read by the rerun_marker job; nothing is written before that job runs)
MARKER_REASONS = {}


def incomplete_marker(stage, *columns, table=None):
    """Input function: a marker that makes a finished shard of `stage` run again when a file
    its manifest (or another `table` of the shard, a function of the shard) lists in `columns`
    (not declared outputs) was deleted or, for patch stores, damaged
    (cohortseg.workflow.markers.rerun_marker; the rerun_marker rule writes it)."""

    def marker(w):
        manifest = table(w.shard) if table else COHORT.stage_output(stage, w.shard)
        found, reason = markers.rerun_marker(manifest, w.shard, columns)
        if reason:
            MARKER_REASONS[found[0]] = reason
        return found

    return marker


def marker_reason(w, output):
    """Params function of `rerun_marker`: why its shard runs again."""
    return MARKER_REASONS.get(output[0], "")


def montage_labels(w):
    """The report's labels of a QC montage or explanation: the subject and why it was chosen
    (read when the report is made, after the montages' job)."""
    from cohortseg.core.io import read_json

    return {
        "subject": w.subject,
        **read_json("results/qc/montages/selection.json")[w.subject],
    }
