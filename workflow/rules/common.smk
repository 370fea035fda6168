# Shared helpers: the cohort, its splits and shards, and config sections passed to scripts.
import json
import os
import shlex

from cohortseg.cohort import load_cohort, shards
from cohortseg.errors import CohortsegError

try:
    SUBJECTS = load_cohort(config)
except CohortsegError as exc:
    raise WorkflowError(f"cohortseg: {exc}") from None

BY_ID = {s.subject: s for s in SUBJECTS}
TRAIN = [s.subject for s in SUBJECTS if s.split == "train"]
VAL = [s.subject for s in SUBJECTS if s.split == "val"]
LABELLED = [s.subject for s in SUBJECTS if s.split in ("train", "val")]
INFER = [s.subject for s in SUBJECTS if s.split in config["inference"]["splits"]]
SHARDS = shards(INFER, config["inference"]["shard_size"])
SHARD_WIDTH = max(5, len(str(len(SHARDS))))
SHARD_IDS = [f"{k:0{SHARD_WIDTH}d}" for k in range(len(SHARDS))]
SHARD_OF = dict(zip(SHARD_IDS, SHARDS))


wildcard_constraints:
    subject=r"[^/]+",
    shard=r"[0-9]+",


def as_json(obj):
    """A config section as one shell-quoted JSON argument."""
    return shlex.quote(json.dumps(obj, sort_keys=True))


def image_of(wildcards):
    return BY_ID[wildcards.subject].image


def label_of(wildcards):
    return BY_ID[wildcards.subject].label


def segmentation(subject):
    return f"results/segmentations/{subject}.nii.gz"


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
        return "srun"
    return ""


def rule_threads(rule_name):
    """Threads of a rule: its cpus_per_task (locally capped at --cores by Snakemake)."""
    rules = config["cluster"]["rules"]
    return {**rules["default"], **rules.get(rule_name, {})}["cpus_per_task"]
