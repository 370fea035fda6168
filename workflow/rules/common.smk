# Shared helpers: the cohort, its splits and shards, and config sections passed to scripts.
import json
import os
import shlex

from cohortseg.cohort import load_cohort, shard_table
from cohortseg.errors import CohortsegError
from cohortseg.patches import check_store
from cohortseg.privacy import REDACT_ENV, load_key, pseudonymize
from cohortseg.validate import read_problems

PRIVACY = config["privacy"]
# Apptainer image for --software-deployment-method apptainer (null: no container).
CONTAINER = config["container"]
try:
    SHEET_SUBJECTS = load_cohort(config)
    # Pseudonymised runs name subjects by a keyed hash in every path and table under results/
    # and logs/, and keep input paths out of logs and tables.
    if PRIVACY["pseudonymize"]:
        os.environ[REDACT_ENV] = "1"
        SUBJECTS = pseudonymize(SHEET_SUBJECTS, load_key(PRIVACY))
    else:
        SUBJECTS = SHEET_SUBJECTS
except CohortsegError as exc:
    raise WorkflowError(f"cohortseg: {exc}") from None

BY_ID = {s.subject: s for s in SUBJECTS}
N_CLASSES = len(config["classes"]) + 1
SHARD_SIZE = config["inference"]["shard_size"]

# Validation: every subject, in shards. With on_invalid: skip, the subjects that the last
# validation found invalid are left out of everything after it.
ON_INVALID = config["validation"]["on_invalid"]
INVALID_TABLE = "results/qc/invalid_subjects.tsv"
VALIDATION_OK = "results/qc/validation.ok"
EXCLUDED = (
    {p.subject for p in read_problems(INVALID_TABLE)} if ON_INVALID == "skip" else set()
)
VALIDATION_SHARD_OF = shard_table([s.subject for s in SUBJECTS], SHARD_SIZE)
VALIDATION_SHARD_IDS = list(VALIDATION_SHARD_OF)

USED = [s for s in SUBJECTS if s.subject not in EXCLUDED]
TRAIN = [s.subject for s in USED if s.split == "train"]
VAL = [s.subject for s in USED if s.split == "val"]
SHARD_OF = shard_table(
    [s.subject for s in SUBJECTS if s.split in config["inference"]["splits"]],
    SHARD_SIZE,
    leave_out=EXCLUDED,
)
SHARD_IDS = list(SHARD_OF)


wildcard_constraints:
    subject=r"[^/]+",
    shard=r"[0-9]+",


def as_json(obj):
    """A config section as one shell-quoted JSON argument."""
    return shlex.quote(json.dumps(obj, sort_keys=True))


def segmentation(subject):
    return f"results/segmentations/{subject}.nii.gz"


def inference_manifest(shard):
    """The table an inference shard writes last: subject, segmentation, SHA-256."""
    return f"results/inference/{shard}.tsv"


def meshes_manifest(shard):
    """The table a mesh shard writes last: subject, class, mesh, SHA-256."""
    return f"results/meshes/{shard}.tsv"


def meshes_of(subject):
    """A subject's mesh files, one per class."""
    fmt = config["meshes"]["format"]
    return [f"results/meshes/{subject}/{c}.{fmt}" for c in config["classes"]]


def script(name):
    """Path of a command-line entry point in scripts/."""
    return f"{workflow.basedir}/scripts/{name}"


def evaluate_items(wildcards):
    return [
        {
            "subject": s,
            "split": BY_ID[s].split,
            "segmentation": segmentation(s),
            "label": BY_ID[s].label,
        }
        for s in SHARD_OF[wildcards.shard]
    ]


def cluster_resources(rule_name):
    """SLURM resources of a rule from config['cluster'] (rules without an entry get 'default').

    GPU rules go to the GPU partition and get one task per GPU; unset partition and account
    fall back to $COHORTSEG_(GPU_)PARTITION and $COHORTSEG_ACCOUNT, else to the cluster's
    defaults. Resources a local run does not know are ignored there.
    """
    cluster = config["cluster"]
    spec = {**cluster["rules"]["default"], **cluster["rules"].get(rule_name, {})}
    gpus = int(spec.pop("gpus", 0))
    partition = cluster["partition"] or os.environ.get("COHORTSEG_PARTITION")
    if gpus:
        partition = (
            cluster["gpu_partition"]
            or os.environ.get("COHORTSEG_GPU_PARTITION")
            or partition
        )
        spec["gpu"] = gpus
        spec["tasks_per_gpu"] = 1
        spec.pop("tasks", None)
        if cluster["gpu_model"]:
            spec["gpu_model"] = cluster["gpu_model"]
    if (
        rule_name == "train"
        and config["training"]["launcher"] == "srun"
        and train_tasks() > 1
    ):
        # the ranks are started by the rule's own srun: the plugin's `mpi` convention keeps
        # the job step from wrapping the rule in an srun of its own (a nested step would wait)
        spec["mpi"] = "srun"
        spec["tasks"] = train_tasks()
    account = cluster["account"] or os.environ.get("COHORTSEG_ACCOUNT")
    if partition:
        spec["slurm_partition"] = partition
    if account:
        spec["slurm_account"] = account
    return spec


def train_launcher():
    """Command prefix that starts the training ranks (see training.launcher)."""
    training = config["training"]
    ranks = int(training["ranks"])
    launcher = training["launcher"]
    if launcher == "torchrun":
        return f"torchrun --standalone --nproc-per-node {ranks}"
    if launcher == "horovodrun":
        return f"horovodrun --gloo -np {ranks} -H localhost:{ranks}"
    if launcher == "srun":
        if train_tasks() < 2:
            return ""  # one task: the job step itself is the only rank
        if training["backend"] == "horovod":
            raise WorkflowError(
                "training.launcher: srun needs training.backend: ddp (Horovod without MPI"
                " cannot rendezvous under srun; use launcher: horovodrun on one node)"
            )
        # the job step hides the allocation's task count from nested steps: say it
        return f"srun --ntasks {train_tasks()}"
    return ""


def rule_threads(rule_name):
    """Threads of a rule: its cpus_per_task (locally capped at --cores by Snakemake)."""
    rules = config["cluster"]["rules"]
    return {**rules["default"], **rules.get(rule_name, {})}["cpus_per_task"]


def tracked(paths):
    """The input files Snakemake should track: all of them for the demo cohort (a rule makes
    them), else those that exist, so that a missing file reaches the validator, which reports
    it with the subject, instead of stopping the whole DAG."""
    if config["samples"] == "demo":
        return list(paths)
    return [p for p in paths if os.path.exists(p)]


def made_by_rules(paths):
    """Those of ``paths`` that a rule makes (the demo cohort's files), for rules that read
    input files without needing Snakemake to track them."""
    return list(paths) if config["samples"] == "demo" else []


def rerun_marker(marker, reason):
    """An extra input that makes a job run again when its output is there but not sound.

    With a ``reason`` (text), ``marker`` is written with it, newer than the job's output, so
    Snakemake sees the job as outdated. Once written, the marker stays an input (older than the
    new output), so the set of inputs does not change again. Returns ``[marker]`` if it exists,
    else []. Markers are written while the DAG is built, so a dry run writes them too.
    """
    if reason:
        os.makedirs(os.path.dirname(marker), exist_ok=True)
        with open(marker, "w") as handle:
            handle.write(reason)
    return [marker] if os.path.exists(marker) else []


def damaged_store_marker(wildcards):
    """`patches`: a store that fails a cheap integrity check is rebuilt."""
    store = f"results/patches/{wildcards.subject}.h5"
    problem = check_store(store) if os.path.exists(store) else None
    return rerun_marker(
        f"results/patches/.damaged/{wildcards.subject}",
        f"{problem}\n" if problem else "",
    )


def incomplete_marker(manifest, marker, expected):
    """`rerun_marker` for a shard job whose per-subject files are not declared outputs (its
    manifest is, so that every shard is a job of one rule): when ``manifest`` exists but some
    ``expected`` files do not, the marker lists them and the shard runs again."""
    missing = []
    if os.path.exists(manifest):
        missing = [path for path in expected if not os.path.exists(path)]
    return rerun_marker(marker, "".join(f"{path}\n" for path in missing))


def incomplete_shard_marker(wildcards):
    """`infer`: a finished shard whose segmentation was deleted runs again."""
    return incomplete_marker(
        inference_manifest(wildcards.shard),
        f"results/inference/.incomplete/{wildcards.shard}",
        [segmentation(s) for s in SHARD_OF[wildcards.shard]],
    )


def incomplete_meshes_marker(wildcards):
    """`meshes`: a finished shard whose mesh was deleted runs again."""
    return incomplete_marker(
        meshes_manifest(wildcards.shard),
        f"results/meshes/.incomplete/{wildcards.shard}",
        [path for s in SHARD_OF[wildcards.shard] for path in meshes_of(s)],
    )


def train_tasks():
    """Ranks of the training job on a cluster: one per GPU, else cluster.rules.train.tasks."""
    spec = {
        **config["cluster"]["rules"]["default"],
        **config["cluster"]["rules"].get("train", {}),
    }
    return int(spec.get("gpus", 0)) or int(spec.get("tasks", 1))
