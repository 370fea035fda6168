# Shared helpers: the cohort, its splits and shards, and config sections passed to scripts.
import json
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
